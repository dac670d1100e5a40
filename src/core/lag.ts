// Lag maths for the replay: rates from two samples, ETA to catch up, and the old tool's caught-up rule.

export interface LagSample {
  atMs: number;
  sourceLsn: bigint;
  appliedLsn: bigint;
}

export interface LagFacts {
  lagBytes: number;
  sourceWalRate: number;
  replayRate: number;
  /** Seconds to catch up at the current rates; null when the replay is not gaining on the source. */
  etaSeconds: number | null;
  caughtUp: boolean;
}

/** The old tool's threshold: within 500 KiB of the source counts as caught up. */
export const CAUGHT_UP_BYTES = 500 * 1024;

export function computeLag(
  previous: LagSample | undefined,
  current: LagSample,
  caughtUpBytes = CAUGHT_UP_BYTES,
): LagFacts {
  const lagBytes =
    current.sourceLsn > current.appliedLsn ? Number(current.sourceLsn - current.appliedLsn) : 0;
  const seconds = previous ? (current.atMs - previous.atMs) / 1000 : 0;
  const rate = (now: bigint, then: bigint | undefined) =>
    seconds > 0 && then !== undefined && now > then ? Number(now - then) / seconds : 0;
  const sourceWalRate = rate(current.sourceLsn, previous?.sourceLsn);
  const replayRate = rate(current.appliedLsn, previous?.appliedLsn);
  const gaining = replayRate - sourceWalRate;
  const caughtUp = lagBytes <= caughtUpBytes;
  return {
    lagBytes,
    sourceWalRate,
    replayRate,
    etaSeconds: caughtUp ? 0 : gaining > 0 ? lagBytes / gaining : null,
    caughtUp,
  };
}

/** Parses '500KB', '1MB' (bytes) or '30s', '2min', '1h' (a duration) for --max-lag. */
export function parseMaxLag(text: string): { bytes: number } | { seconds: number } | undefined {
  const duration = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)\s*$/i.exec(text);
  if (duration) {
    const unit = (duration[2] ?? 's').toLowerCase();
    const factor = unit === 'ms' ? 0.001 : unit === 's' ? 1 : unit === 'h' ? 3600 : 60;
    return { seconds: Number(duration[1]) * factor };
  }
  const size = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|k|kib|mb|m|mib|gb|g|gib)?\s*$/i.exec(text);
  if (!size) return undefined;
  const unit = (size[2] ?? 'b').toLowerCase()[0] as 'b' | 'k' | 'm' | 'g';
  return { bytes: Math.round(Number(size[1]) * { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit]) };
}

export function parseDurationMs(text: string): number | undefined {
  const parsed = parseMaxLag(text);
  return parsed && 'seconds' in parsed ? parsed.seconds * 1000 : undefined;
}
