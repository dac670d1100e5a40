// Validation results and the pure comparisons behind them: per-bucket digests diffed into mismatching key
// ranges, two key-ordered row streams merged into the first differing keys, and the verdict per table.
// The SQL that produces digests lives in adapters/postgres/checksum.ts; renderings in workflows/validate-render.ts.

/** One key-hash bucket of one side: how many rows fell into it and the sum of their 64-bit row hashes. */
export interface BucketDigest {
  bucket: number;
  rows: number;
  /** Decimal text of a numeric sum: exact whatever the row count, so no overflow or rounding. */
  sum: string;
}

/** One row of a mismatching bucket as streamed in key order. */
export interface RowDigest {
  /** The sort key: key text for keyed tables, the row hash for keyless ones. */
  key: string;
  /** md5 of the row text. */
  hash: string;
  /** What a human is shown: the key text, or the (truncated) row text of a keyless row. */
  label: string;
}

export const DifferenceKind = {
  missingOnTarget: 'missing-on-target',
  extraOnTarget: 'extra-on-target',
  contentDiffers: 'content-differs',
} as const;
export type DifferenceKind = (typeof DifferenceKind)[keyof typeof DifferenceKind];

export interface KeyDifference {
  key: string;
  kind: DifferenceKind;
}

export interface TableValidation {
  /** Display name (schema.name, quoted where needed). */
  table: string;
  schema: string;
  name: string;
  sourceRows: number;
  /** null when the table is missing on the target. */
  targetRows: number | null;
  /** null when checksums were not requested. */
  checksumMatch: boolean | null;
  ok: boolean;
  /** Key columns the rows are bucketed and listed by; null = keyless (the whole row is the key). */
  keyColumns: string[] | null;
  /** A TimescaleDB chunk: its hypertable's display name (reports show a hypertable's chunks as one row). */
  hypertable?: string;
  /** Why the table could not be compared fully (missing table or columns), in words. */
  problem?: string;
  /** Key ranges (hash buckets) whose checksums differ, described for humans. */
  mismatchedRanges?: string[];
  /** The first keys found on one side only or with different contents (key text, or row text if keyless). */
  firstDifferingKeys?: string[];
  /** firstDifferingKeys with what differs about each. */
  differences?: KeyDifference[];
}

export interface ValidationReport {
  ok: boolean;
  /** How the source side was read: in the migration's snapshot, or live (the source must be quiet). */
  sourceMode: 'snapshot' | 'aligned' | 'live';
  checksum: boolean;
  /** Number of key-hash buckets per table (checksum mode). */
  buckets: number | null;
  tables: TableValidation[];
  /** Things that limit what the verdict means (live source, interrupted run). */
  warnings: string[];
}

/** Buckets whose row count or hash sum differ; a bucket absent on one side counts as empty there. */
export function diffBuckets(source: readonly BucketDigest[], target: readonly BucketDigest[]): number[] {
  const index = (digests: readonly BucketDigest[]) => new Map(digests.map((d) => [d.bucket, d]));
  const s = index(source);
  const t = index(target);
  const out: number[] = [];
  for (const bucket of new Set([...s.keys(), ...t.keys()])) {
    const a = s.get(bucket);
    const b = t.get(bucket);
    if ((a?.rows ?? 0) !== (b?.rows ?? 0) || normalizeSum(a?.sum) !== normalizeSum(b?.sum)) out.push(bucket);
  }
  return out.sort((x, y) => x - y);
}

// numeric sums come back as integer text; '0', '-0' and '' (no rows) all mean nothing was summed.
const normalizeSum = (sum: string | undefined) => (sum === undefined || /^-?0*$/.test(sum) ? '0' : sum);

export function sumRows(digests: readonly BucketDigest[]): number {
  return digests.reduce((total, d) => total + d.rows, 0);
}

export function describeBucket(
  bucket: number,
  buckets: number,
  source: readonly BucketDigest[],
  target: readonly BucketDigest[],
): string {
  const rows = (digests: readonly BucketDigest[]) => digests.find((d) => d.bucket === bucket)?.rows ?? 0;
  const s = rows(source);
  const t = rows(target);
  return `key range ${bucket + 1}/${buckets}: ${s === t ? `${s} rows on both sides, contents differ` : `${s} rows on the source, ${t} on the target`}`;
}

/**
 * Orders strings as PostgreSQL's "C" collation orders their UTF-8 bytes, which is code point order.
 * JavaScript's < compares UTF-16 units and disagrees for characters above U+FFFF vs U+E000-U+FFFF.
 */
export function compareCodePoints(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.codePointAt(i) ?? 0;
    const y = b.codePointAt(i) ?? 0;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/**
 * Merges the source and target rows of the mismatching buckets, both ordered by key (code point order),
 * and returns the first `limit` keys that are on one side only or whose row hashes differ.
 * Stops reading as soon as it has enough, and always closes both streams.
 */
export async function diffRowStreams(
  source: AsyncIterable<RowDigest>,
  target: AsyncIterable<RowDigest>,
  limit: number,
): Promise<KeyDifference[]> {
  const s = source[Symbol.asyncIterator]();
  const t = target[Symbol.asyncIterator]();
  const out: KeyDifference[] = [];
  try {
    let [a, b] = await Promise.all([s.next(), t.next()]);
    while (out.length < limit && !(a.done && b.done)) {
      const order = a.done ? 1 : b.done ? -1 : compareCodePoints(a.value.key, b.value.key);
      if (order < 0 && !a.done) {
        out.push({ key: a.value.label, kind: DifferenceKind.missingOnTarget });
        a = await s.next();
      } else if (order > 0 && !b.done) {
        out.push({ key: b.value.label, kind: DifferenceKind.extraOnTarget });
        b = await t.next();
      } else if (!a.done && !b.done) {
        if (a.value.hash !== b.value.hash)
          out.push({ key: a.value.label, kind: DifferenceKind.contentDiffers });
        [a, b] = await Promise.all([s.next(), t.next()]);
      }
    }
  } finally {
    await Promise.all([s.return?.(), t.return?.()]);
  }
  return out;
}

/** The verdict for one table from what was measured. */
export function buildTableValidation(input: {
  table: string;
  schema: string;
  name: string;
  keyColumns: string[] | null;
  hypertable?: string;
  sourceRows: number;
  /** null = the table is missing on the target. */
  targetRows: number | null;
  /** undefined = checksums not requested. */
  checksum?: {
    buckets: number;
    source: readonly BucketDigest[];
    target: readonly BucketDigest[];
    differences: readonly KeyDifference[];
  };
  /** Why the contents could not be compared (missing table or columns). */
  problem?: string;
  /** Checksums were requested but could not be computed (see problem). */
  checksumSkipped?: boolean;
}): TableValidation {
  const { checksum } = input;
  const mismatched = checksum ? diffBuckets(checksum.source, checksum.target) : [];
  const checksumMatch = input.checksumSkipped ? false : checksum ? mismatched.length === 0 : null;
  const out: TableValidation = {
    table: input.table,
    schema: input.schema,
    name: input.name,
    sourceRows: input.sourceRows,
    targetRows: input.targetRows,
    checksumMatch,
    ok: input.problem === undefined && input.targetRows === input.sourceRows && checksumMatch !== false,
    keyColumns: input.keyColumns,
  };
  if (input.problem !== undefined) out.problem = input.problem;
  if (input.hypertable !== undefined) out.hypertable = input.hypertable;
  if (checksum && mismatched.length > 0) {
    out.mismatchedRanges = mismatched.map((b) =>
      describeBucket(b, checksum.buckets, checksum.source, checksum.target),
    );
    out.differences = [...checksum.differences];
    out.firstDifferingKeys = checksum.differences.map((d) => d.key);
  }
  return out;
}

export function buildValidationReport(input: {
  sourceMode: 'snapshot' | 'aligned' | 'live';
  checksum: boolean;
  buckets: number;
  tables: TableValidation[];
  warnings: string[];
}): ValidationReport {
  return {
    ok: input.tables.every((t) => t.ok),
    sourceMode: input.sourceMode,
    checksum: input.checksum,
    buckets: input.checksum ? input.buckets : null,
    tables: input.tables,
    warnings: input.warnings,
  };
}
