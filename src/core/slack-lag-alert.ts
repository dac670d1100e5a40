// Lag alerts with hysteresis: "breached" once the lag has stayed above the target for a while, "recovered"
// once it has stayed clearly below it (a lower threshold) for a while, so a lag that hovers around the
// target does not flap. The first verdict of a run is silent (an initial catch-up is not an incident).
//
//   unknown ──first sample──▶ within | breached (silent)
//   within ──above target for breachHoldMs──▶ breached (alert)
//   breached ──below target × recoverRatio for recoverHoldMs──▶ within (alert)
//   breached, not announced ──below target × recoverRatio──▶ within (silent, at once)

export type LagTarget = { bytes: number } | { seconds: number };

export interface LagAlertPolicy {
  target: LagTarget;
  /** Recovery needs the lag below target × this (0 < ratio ≤ 1). */
  recoverRatio: number;
  breachHoldMs: number;
  recoverHoldMs: number;
}

export const DEFAULT_LAG_ALERT_TIMING = { recoverRatio: 0.8, breachHoldMs: 30_000, recoverHoldMs: 30_000 };

export interface LagAlertState {
  status: 'unknown' | 'within' | 'breached';
  /** Whether the current breach was announced (so is its recovery). */
  alerted: boolean;
  /** Since when the samples have pointed to the other status. */
  pendingSinceMs: number | null;
  breachedAtMs: number | null;
}

export const INITIAL_LAG_ALERT: LagAlertState = {
  status: 'unknown',
  alerted: false,
  pendingSinceMs: null,
  breachedAtMs: null,
};

export interface LagReading {
  lagBytes: number;
  lagSeconds: number;
  atMs: number;
}

export type LagAlert = { kind: 'breached' } | { kind: 'recovered'; breachMs: number };

/** The lag in the target's unit. */
export function lagValue(reading: Pick<LagReading, 'lagBytes' | 'lagSeconds'>, target: LagTarget): number {
  return 'bytes' in target ? reading.lagBytes : reading.lagSeconds;
}

export function isWithinLagTarget(
  reading: Pick<LagReading, 'lagBytes' | 'lagSeconds'>,
  target: LagTarget,
): boolean {
  return lagValue(reading, target) <= ('bytes' in target ? target.bytes : target.seconds);
}

export function computeLagAlert(
  state: LagAlertState,
  reading: LagReading,
  policy: LagAlertPolicy,
): { state: LagAlertState; alert: LagAlert | null } {
  const limit = 'bytes' in policy.target ? policy.target.bytes : policy.target.seconds;
  const value = lagValue(reading, policy.target);
  const above = value > limit;
  const clearlyBelow = value <= limit * policy.recoverRatio;
  if (state.status === 'unknown') {
    return {
      state: {
        status: above ? 'breached' : 'within',
        alerted: false,
        pendingSinceMs: null,
        breachedAtMs: above ? reading.atMs : null,
      },
      alert: null,
    };
  }
  if (state.status === 'within') {
    if (!above) return { state: { ...state, pendingSinceMs: null }, alert: null };
    const since = state.pendingSinceMs ?? reading.atMs;
    if (reading.atMs - since < policy.breachHoldMs)
      return { state: { ...state, pendingSinceMs: since }, alert: null };
    return {
      state: { status: 'breached', alerted: true, pendingSinceMs: null, breachedAtMs: since },
      alert: { kind: 'breached' },
    };
  }
  // breached
  if (!clearlyBelow) return { state: { ...state, pendingSinceMs: null }, alert: null };
  if (!state.alerted)
    // Nothing was announced (the initial catch-up): no hold needed before counting as within.
    return {
      state: { status: 'within', alerted: false, pendingSinceMs: null, breachedAtMs: null },
      alert: null,
    };
  const since = state.pendingSinceMs ?? reading.atMs;
  if (reading.atMs - since < policy.recoverHoldMs)
    return { state: { ...state, pendingSinceMs: since }, alert: null };
  return {
    state: { status: 'within', alerted: false, pendingSinceMs: null, breachedAtMs: null },
    alert: { kind: 'recovered', breachMs: since - (state.breachedAtMs ?? since) },
  };
}
