import { describe, expect, it } from 'vitest';
import {
  computeLagAlert,
  INITIAL_LAG_ALERT,
  type LagAlertPolicy,
  type LagAlertState,
} from '../../../src/core/slack-lag-alert';

const policy: LagAlertPolicy = {
  target: { bytes: 1000 },
  recoverRatio: 0.8,
  breachHoldMs: 30_000,
  recoverHoldMs: 30_000,
};

/** Feeds (atMs, lagBytes) samples and returns the alerts in order. */
function run(samples: [number, number][], start: LagAlertState = INITIAL_LAG_ALERT): string[] {
  let state = start;
  const alerts: string[] = [];
  for (const [atMs, lagBytes] of samples) {
    const r = computeLagAlert(state, { atMs, lagBytes, lagSeconds: 0 }, policy);
    state = r.state;
    if (r.alert) alerts.push(`${r.alert.kind}@${atMs}`);
  }
  return alerts;
}

describe('lag alerts with hysteresis', () => {
  it('says nothing about an initial catch-up, however long', () => {
    expect(
      run([
        [0, 50_000],
        [60_000, 40_000],
        [120_000, 500],
        [180_000, 400],
      ]),
    ).toEqual([]);
  });

  it('alerts once the lag has stayed above the target for the hold time, and recovers below 80 % of it', () => {
    expect(
      run([
        [0, 100],
        [10_000, 5000],
        [20_000, 5000],
        [40_000, 5000],
        [50_000, 900], // below the target but not below 800: still breached
        [60_000, 700],
        [80_000, 700],
        [90_000, 600],
      ]),
    ).toEqual(['breached@40000', 'recovered@90000']);
  });

  it('does not flap while the lag hovers around the target', () => {
    const hovering: [number, number][] = [[0, 100]];
    for (let t = 5000; t < 300_000; t += 5000) hovering.push([t, t % 10_000 === 0 ? 1200 : 950]);
    expect(run(hovering)).toEqual([]);
  });

  it('uses seconds when the target is a duration', () => {
    const r = computeLagAlert(
      { status: 'within', alerted: false, pendingSinceMs: 0, breachedAtMs: null },
      { atMs: 31_000, lagBytes: 0, lagSeconds: 9 },
      { ...policy, target: { seconds: 5 } },
    );
    expect(r.alert).toEqual({ kind: 'breached' });
  });
});
