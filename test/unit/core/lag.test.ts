// Lag maths of the replay (bytes behind, rates, ETA, the caught-up rule) and the --max-lag parser.
import { describe, expect, it } from 'vitest';
import { CAUGHT_UP_BYTES, computeLag, parseDurationMs, parseMaxLag } from '../../../src/core/lag';

const MB = 1024 * 1024;
const sample = (atMs: number, sourceLsn: number, appliedLsn: number) => ({
  atMs,
  sourceLsn: BigInt(sourceLsn),
  appliedLsn: BigInt(appliedLsn),
});

describe('computeLag', () => {
  it('reports the bytes between the source position and the applied one, with no rates on the first sample', () => {
    expect(computeLag(undefined, sample(1000, 10 * MB, 4 * MB))).toEqual({
      lagBytes: 6 * MB,
      sourceWalRate: 0,
      replayRate: 0,
      etaSeconds: null,
      caughtUp: false,
    });
  });

  it('measures both rates between two samples and estimates the time to catch up', () => {
    // In 2 s the source wrote 2 MB and the replay applied 6 MB: it gains 2 MB/s on a 4 MB lag.
    const facts = computeLag(sample(0, 10 * MB, 0), sample(2000, 12 * MB, 6 * MB));
    expect(facts).toEqual({
      lagBytes: 6 * MB,
      sourceWalRate: MB,
      replayRate: 3 * MB,
      etaSeconds: 3,
      caughtUp: false,
    });
  });

  it('gives no ETA when the replay is not gaining on the source', () => {
    const facts = computeLag(sample(0, 10 * MB, 0), sample(1000, 20 * MB, 5 * MB));
    expect(facts.etaSeconds).toBeNull();
    expect(facts.lagBytes).toBe(15 * MB);
    expect(facts.replayRate).toBeLessThan(facts.sourceWalRate);
  });

  it('counts as caught up within 500 KiB of the source, with an ETA of zero', () => {
    expect(CAUGHT_UP_BYTES).toBe(500 * 1024);
    expect(computeLag(undefined, sample(0, 2 * MB, 2 * MB - CAUGHT_UP_BYTES))).toMatchObject({
      lagBytes: CAUGHT_UP_BYTES,
      caughtUp: true,
      etaSeconds: 0,
    });
    expect(computeLag(undefined, sample(0, 2 * MB, 2 * MB - CAUGHT_UP_BYTES - 1)).caughtUp).toBe(false);
    expect(computeLag(undefined, sample(0, 100, 0), 50)).toMatchObject({ lagBytes: 100, caughtUp: false });
  });

  it('reports zero lag, never a negative one, when the applied position is past the sampled source position', () => {
    // An idle acknowledgement can move the applied position past a source position sampled a moment earlier.
    expect(computeLag(undefined, sample(0, 1000, 1200))).toMatchObject({ lagBytes: 0, caughtUp: true });
  });

  it('reports zero rates when time did not advance or positions went backwards', () => {
    expect(computeLag(sample(1000, 0, 0), sample(1000, MB, MB))).toMatchObject({
      sourceWalRate: 0,
      replayRate: 0,
    });
    expect(computeLag(sample(0, 5 * MB, 5 * MB), sample(1000, 4 * MB, 4 * MB))).toMatchObject({
      sourceWalRate: 0,
      replayRate: 0,
    });
  });

  it('handles positions beyond 2^53 without losing the difference', () => {
    const high = 0x7fff_ffff_0000_0000n;
    const facts = computeLag(undefined, { atMs: 0, sourceLsn: high + 4096n, appliedLsn: high });
    expect(facts.lagBytes).toBe(4096);
  });
});

describe('parseMaxLag', () => {
  it('reads sizes in bytes, kB, MB and GB, with or without a space and in any case', () => {
    expect(parseMaxLag('0')).toEqual({ bytes: 0 });
    expect(parseMaxLag('1234')).toEqual({ bytes: 1234 });
    expect(parseMaxLag('500KB')).toEqual({ bytes: 500 * 1024 });
    expect(parseMaxLag('500 kB')).toEqual({ bytes: 500 * 1024 });
    expect(parseMaxLag('1.5MB')).toEqual({ bytes: 1.5 * MB });
    expect(parseMaxLag('16MiB')).toEqual({ bytes: 16 * MB });
    expect(parseMaxLag('2g')).toEqual({ bytes: 2 * 1024 * MB });
    expect(parseMaxLag('10b')).toEqual({ bytes: 10 });
  });

  it('reads durations in ms, s, min and h as seconds', () => {
    expect(parseMaxLag('5s')).toEqual({ seconds: 5 });
    expect(parseMaxLag('250ms')).toEqual({ seconds: 0.25 });
    expect(parseMaxLag('2min')).toEqual({ seconds: 120 });
    expect(parseMaxLag('1h')).toEqual({ seconds: 3600 });
    expect(parseMaxLag(' 1.5 S ')).toEqual({ seconds: 1.5 });
  });

  it('keeps "m" a size (MB), not minutes', () => {
    expect(parseMaxLag('5m')).toEqual({ bytes: 5 * MB });
  });

  it('rejects what is neither a size nor a duration', () => {
    for (const text of ['', 'lots', '-5s', '5 parsecs', '5KB5', '1e3'])
      expect(parseMaxLag(text)).toBeUndefined();
  });
});

describe('parseDurationMs', () => {
  it('accepts durations only', () => {
    expect(parseDurationMs('10s')).toBe(10_000);
    expect(parseDurationMs('2min')).toBe(120_000);
    expect(parseDurationMs('500KB')).toBeUndefined();
    expect(parseDurationMs('soon')).toBeUndefined();
  });
});
