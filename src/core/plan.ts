// The copy plan: which tables are copied, in how many parts (key or ctid ranges for big tables), and
// which publication each table joins. Pure: the catalog facts come in, the plan goes out.
import { type QualifiedName, quoteIdent, quoteQualified } from './sql';

export interface TableInfo extends QualifiedName {
  kind: 'table' | 'partitioned' | 'foreign';
  unlogged: boolean;
  isPartition: boolean;
  /** Columns copied: every non-generated column, in attnum order. */
  columns: string[];
  /** Every column including generated ones (validation hashes what the user sees). */
  allColumns: string[];
  primaryKey: string[] | null;
  replicaIdentity: 'default' | 'index' | 'full' | 'nothing';
  /** UPDATE/DELETE can be decoded (a primary key, a replica identity index, or FULL). */
  hasReplicaIdentity: boolean;
  /** The single integer primary-key column, when there is one (splits by key range). */
  integerKey: string | null;
  bytes: number;
  pages: number;
  /**
   * A TimescaleDB chunk: the hypertable its rows belong to. It is copied whole (its compressed rows too)
   * into that hypertable, and its changes are applied to it.
   */
  chunkOf?: QualifiedName;
  /** A TimescaleDB hypertable: its rows live in its chunks (listed as tables of their own). */
  hypertable?: boolean;
}

export interface PartPlan extends QualifiedName {
  partId: number;
  partIndex: number;
  partCount: number;
  rangeKind: 'all' | 'key' | 'ctid';
  rangeColumn: string | null;
  /** Inclusive lower bound (key value or block number); null = unbounded. */
  rangeFrom: string | null;
  /** Exclusive upper bound; null = unbounded. */
  rangeTo: string | null;
  estBytes: number;
}

/** Tables whose rows are copied: plain tables and leaf partitions (partitioned parents hold no rows). */
export function isCopied(table: TableInfo): boolean {
  return table.kind === 'table';
}

/** Tables whose changes are replicated: copied and WAL-logged (unlogged tables are not decodable). */
export function isReplicated(table: TableInfo): boolean {
  return isCopied(table) && !table.unlogged;
}

export function buildPublicationSets(tables: TableInfo[]): { full: TableInfo[]; insertOnly: TableInfo[] } {
  const replicated = tables.filter(isReplicated);
  return {
    full: replicated.filter((t) => t.hasReplicaIdentity),
    // Publishing UPDATE/DELETE for a table without replica identity makes those statements fail on
    // the source, so such tables only publish INSERT and TRUNCATE.
    insertOnly: replicated.filter((t) => !t.hasReplicaIdentity),
  };
}

export interface PlanOptions {
  splitBytes: number;
  /** min and max of the integer key, read in the snapshot, for tables that will be split. */
  keyBounds: ReadonlyMap<string, { min: bigint; max: bigint }>;
}

export const tableKey = (t: QualifiedName): string => `${t.schema}\u0000${t.name}`;

export function buildCopyPlan(tables: TableInfo[], options: PlanOptions): PartPlan[] {
  const parts: PartPlan[] = [];
  // Largest first: with N workers the long tables start early and the makespan shrinks.
  const copied = tables
    .filter(isCopied)
    .sort((a, b) => b.bytes - a.bytes || tableKey(a).localeCompare(tableKey(b)));
  for (const table of copied) {
    // A chunk is one part: its compressed rows have no ctid range, and chunks are already bounded in size.
    const count =
      options.splitBytes > 0 && !table.chunkOf ? Math.max(1, Math.ceil(table.bytes / options.splitBytes)) : 1;
    const bounds = options.keyBounds.get(tableKey(table));
    const ranges =
      count <= 1
        ? [{ kind: 'all' as const, column: null, from: null, to: null }]
        : table.integerKey && bounds
          ? splitRange(bounds.min, bounds.max + 1n, count).map(([from, to], i, all) => ({
              kind: 'key' as const,
              column: table.integerKey,
              from: i === 0 ? null : from.toString(),
              to: i === all.length - 1 ? null : to.toString(),
            }))
          : splitRange(0n, BigInt(Math.max(table.pages, count)), count).map(([from, to], i, all) => ({
              kind: 'ctid' as const,
              column: null,
              from: i === 0 ? null : from.toString(),
              // The last range is open so rows on pages added after planning are still covered.
              to: i === all.length - 1 ? null : to.toString(),
            }));
    ranges.forEach((range, index) => {
      parts.push({
        schema: table.schema,
        name: table.name,
        partId: parts.length + 1,
        partIndex: index,
        partCount: ranges.length,
        rangeKind: range.kind,
        rangeColumn: range.column,
        rangeFrom: range.from,
        rangeTo: range.to,
        estBytes: Math.round(table.bytes / ranges.length),
      });
    });
  }
  return parts;
}

/** Splits [from, to) into `count` contiguous, non-empty-where-possible ranges. */
export function splitRange(from: bigint, to: bigint, count: number): [bigint, bigint][] {
  const span = to - from;
  const n = BigInt(count);
  const out: [bigint, bigint][] = [];
  for (let i = 0n; i < n; i++) {
    out.push([from + (span * i) / n, from + (span * (i + 1n)) / n]);
  }
  return out;
}

/** The WHERE clause selecting one part's rows; empty for a whole table. */
export function buildPartPredicate(
  part: Pick<PartPlan, 'rangeKind' | 'rangeColumn' | 'rangeFrom' | 'rangeTo'>,
): string {
  if (part.rangeKind === 'all') return '';
  const conditions: string[] = [];
  if (part.rangeKind === 'key') {
    const column = quoteIdent(part.rangeColumn ?? '');
    // Bounds are integers we produced; BigInt() rejects anything else before it reaches SQL.
    if (part.rangeFrom !== null) conditions.push(`${column} >= ${BigInt(part.rangeFrom)}`);
    if (part.rangeTo !== null) conditions.push(`${column} < ${BigInt(part.rangeTo)}`);
  } else {
    // TID range scans (PostgreSQL 14+) read only these pages.
    if (part.rangeFrom !== null) conditions.push(`ctid >= '(${BigInt(part.rangeFrom)},0)'::tid`);
    if (part.rangeTo !== null) conditions.push(`ctid < '(${BigInt(part.rangeTo)},0)'::tid`);
  }
  return conditions.length ? ` WHERE ${conditions.join(' AND ')}` : '';
}

/**
 * COPY … TO STDOUT for one part on the source. A TimescaleDB chunk is read through a query: COPY of the
 * table itself would read only its uncompressed rows.
 */
export function buildCopyOutSql(
  part: PartPlan,
  columns: string[],
  options: { chunk?: boolean; orderBy?: string } = {},
): string {
  const predicate = buildPartPredicate(part);
  if (options.chunk) {
    const order = options.orderBy ? ` ORDER BY ${options.orderBy}` : '';
    return `COPY (SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(part)}${predicate}${order}) TO STDOUT`;
  }
  if (!predicate) return `COPY ${quoteQualified(part)}${columnList(columns)} TO STDOUT`;
  // A table whose columns are all generated (or none at all) still has rows: select a constant-free row.
  const select = columns.length ? columns.map(quoteIdent).join(', ') : '';
  return `COPY (SELECT ${select} FROM ONLY ${quoteQualified(part)}${predicate}) TO STDOUT`;
}

export function buildCopyInSql(table: QualifiedName, columns: string[]): string {
  return `COPY ${quoteQualified(table)}${columnList(columns)} FROM STDIN`;
}

const columnList = (columns: string[]) => (columns.length ? ` (${columns.map(quoteIdent).join(', ')})` : '');
