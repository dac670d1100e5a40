// Replication lag from samples, computed the same way for every tool: lag bytes = source WAL position − the
// tool's applied position; lag seconds = how long ago the source first wrote past the applied position (the age
// of the oldest change not yet applied). Pure: no I/O.

/** One tick of the sampler: the source's WAL position, then the tool's positions read right after. */
export interface LagSample {
  /** Milliseconds (performance.now()) just before the source was asked for its WAL position. */
  sourceAtMs: number;
  sourceLsn: bigint;
  /** Milliseconds just after the tool's applied position was read. */
  appliedAtMs: number;
  /** What the tool has committed on the target; undefined when it could not be read. */
  appliedLsn: bigint | undefined;
  /** confirmed_flush_lsn of the tool's slot on the source: what it acknowledged (a second view). */
  confirmedLsn: bigint | undefined;
}

export interface LagPoint {
  atMs: number;
  lagBytes: number;
  lagSeconds: number;
  /** True when the applied position predates the first sample, so lagSeconds is only a lower bound. */
  lowerBound: boolean;
}

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

export interface LagSummary {
  samples: number;
  bytes: Percentiles;
  seconds: Percentiles;
  /** Samples whose seconds are a lower bound (the position was older than the first sample). */
  lowerBoundSamples: number;
}

/** Parses a pg_lsn text ('16/B374D848') into a number of bytes. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split('/');
  if (high === undefined || low === undefined || !/^[0-9A-Fa-f]+$/.test(high + low))
    throw new Error(`not an LSN: '${text}'`);
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/**
 * The moment the source's WAL first went past `position`, linearly interpolated between the two source samples
 * around it; the first sample's time (flagged as a lower bound) when it was past already then.
 */
export function findFirstPassedMs(
  timeline: readonly Pick<LagSample, 'sourceAtMs' | 'sourceLsn'>[],
  position: bigint,
): { atMs: number; lowerBound: boolean } | undefined {
  let previous: Pick<LagSample, 'sourceAtMs' | 'sourceLsn'> | undefined;
  for (const sample of timeline) {
    if (sample.sourceLsn > position) {
      if (!previous) return { atMs: sample.sourceAtMs, lowerBound: true };
      const span = Number(sample.sourceLsn - previous.sourceLsn);
      const fraction = span > 0 ? Number(position - previous.sourceLsn) / span : 1;
      return {
        atMs: previous.sourceAtMs + fraction * (sample.sourceAtMs - previous.sourceAtMs),
        lowerBound: false,
      };
    }
    previous = sample;
  }
  return undefined;
}

/**
 * Lag at every sample that has a position. `pick` chooses which position (applied on the target, or confirmed
 * on the source). A position at or past the source's is no lag at all. WAL written before `notBeforeMs` counts
 * as written then (the start of the load: older WAL is idle records no commit position ever passes).
 */
export function computeLagPoints(
  samples: readonly LagSample[],
  pick: (sample: LagSample) => bigint | undefined = (sample) => sample.appliedLsn,
  notBeforeMs = Number.NEGATIVE_INFINITY,
): LagPoint[] {
  return samples.flatMap((sample) => {
    const position = pick(sample);
    if (position === undefined) return [];
    if (position >= sample.sourceLsn)
      return [{ atMs: sample.appliedAtMs, lagBytes: 0, lagSeconds: 0, lowerBound: false }];
    // The source was past `position` at this very sample, so the search always finds a moment.
    const passed = findFirstPassedMs(samples, position) ?? { atMs: sample.sourceAtMs, lowerBound: false };
    const clamped = passed.atMs < notBeforeMs;
    return [
      {
        atMs: sample.appliedAtMs,
        lagBytes: Number(sample.sourceLsn - position),
        lagSeconds: Math.max(0, (sample.appliedAtMs - Math.max(passed.atMs, notBeforeMs)) / 1000),
        lowerBound: passed.lowerBound && !clamped,
      },
    ];
  });
}

/** Nearest-rank percentile (p in 0..100) of values; undefined for none. */
export function computePercentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

function summarizeValues(values: readonly number[]): Percentiles {
  return {
    p50: computePercentile(values, 50) ?? 0,
    p99: computePercentile(values, 99) ?? 0,
    max: values.length > 0 ? Math.max(...values) : 0,
  };
}

/** p50/p99/max of the points taken within [fromMs, toMs]; undefined when there are none. */
export function summarizeLag(
  points: readonly LagPoint[],
  fromMs: number,
  toMs: number,
): LagSummary | undefined {
  const window = points.filter((point) => point.atMs >= fromMs && point.atMs <= toMs);
  if (window.length === 0) return undefined;
  return {
    samples: window.length,
    bytes: summarizeValues(window.map((point) => point.lagBytes)),
    seconds: summarizeValues(window.map((point) => point.lagSeconds)),
    lowerBoundSamples: window.filter((point) => point.lowerBound).length,
  };
}
