// When the notifier may call Slack: edits of the live message coalesced to at most one per interval (the
// newest state wins), retries spaced by Slack's Retry-After or a doubling back-off, and a bound after
// which a notification is dropped. Pure: the adapter asks, with the time from its clock.

/** Slack's chat.update is a Tier 3 method (about 50 calls a minute); one edit per 10 s stays far below. */
export const DEFAULT_UPDATE_INTERVAL_MS = 10_000;
/** A notification is tried this many times, then dropped with a log line. */
export const MAX_ATTEMPTS = 4;
/** A Retry-After longer than this drops the notification instead of holding the queue. */
export const MAX_RETRY_AFTER_MS = 60_000;

export interface UpdatePacing {
  /** When the last edit was sent (successfully or not); null before the first. */
  lastSentMs: number | null;
  /** Whether the state changed since the last edit. */
  dirty: boolean;
  /** Send the newest state now whatever the interval (the run is ending). */
  final: boolean;
}

/** Milliseconds until the next edit may go out: 0 = now, null = nothing to send. */
export function computeUpdateDelay(pacing: UpdatePacing, nowMs: number, intervalMs: number): number | null {
  if (!pacing.dirty) return null;
  if (pacing.final || pacing.lastSentMs === null) return 0;
  return Math.max(0, pacing.lastSentMs + intervalMs - nowMs);
}

/**
 * After a failed attempt (1-based): how long to wait before the next one, or 'drop'. Slack's Retry-After
 * (seconds) wins over the back-off; errors that a retry cannot fix (bad token, unknown channel) drop.
 */
export function computeRetry(
  attempt: number,
  failure: { retryAfterSeconds?: number; permanent?: boolean },
): { waitMs: number } | 'drop' {
  if (failure.permanent || attempt >= MAX_ATTEMPTS) return 'drop';
  if (failure.retryAfterSeconds !== undefined) {
    const waitMs = Math.max(0, failure.retryAfterSeconds * 1000);
    return waitMs > MAX_RETRY_AFTER_MS ? 'drop' : { waitMs };
  }
  return { waitMs: Math.min(1000 * 2 ** (attempt - 1), 8000) };
}
