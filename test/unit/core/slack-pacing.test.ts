import { describe, expect, it } from 'vitest';
import { computeRetry, computeUpdateDelay, MAX_ATTEMPTS } from '../../../src/core/slack-pacing';

describe('pacing of Slack calls', () => {
  it('sends the first edit at once, then at most one per interval, and nothing when nothing changed', () => {
    expect(computeUpdateDelay({ lastSentMs: null, dirty: true, final: false }, 0, 10_000)).toBe(0);
    expect(computeUpdateDelay({ lastSentMs: 1000, dirty: true, final: false }, 4000, 10_000)).toBe(7000);
    expect(computeUpdateDelay({ lastSentMs: 1000, dirty: true, final: false }, 12_000, 10_000)).toBe(0);
    expect(computeUpdateDelay({ lastSentMs: 1000, dirty: false, final: true }, 2000, 10_000)).toBeNull();
  });

  it('sends the final state at once, whatever the interval', () => {
    expect(computeUpdateDelay({ lastSentMs: 1000, dirty: true, final: true }, 1001, 10_000)).toBe(0);
  });

  it("waits Slack's Retry-After, backs off otherwise, and drops after the bound or on a permanent error", () => {
    expect(computeRetry(1, { retryAfterSeconds: 3 })).toEqual({ waitMs: 3000 });
    expect(computeRetry(1, {})).toEqual({ waitMs: 1000 });
    expect(computeRetry(3, {})).toEqual({ waitMs: 4000 });
    expect(computeRetry(MAX_ATTEMPTS, {})).toBe('drop');
    expect(computeRetry(1, { retryAfterSeconds: 3600 })).toBe('drop');
    expect(computeRetry(1, { permanent: true })).toBe('drop');
  });
});
