// The SQL side of validation on one database: row counts, per-bucket digests (row count and the sum of a
// 64-bit slice of each row's md5, bucketed by a hash of the key) and, for buckets that differ, every
// row's (key, hash) streamed in key order through a server-side cursor. Callers hold the transaction.
import type pg from 'pg';
import { tableKey } from '../../core/plan';
import { type QualifiedName, quoteIdent, quoteQualified } from '../../core/sql';
import type { BucketDigest, RowDigest } from '../../core/validation';

export interface ChecksumTable extends QualifiedName {
  /** Every column (generated ones too) in the source's attnum order: a different physical order on the
   * target still yields the same row text. */
  columns: string[];
  /** Primary key or replica identity index columns; null = keyless, the whole row is the key. */
  keyColumns: string[] | null;
  /** What to read instead of the table's own rows (`ONLY schema.name`), e.g. a chunk's range of a hypertable. */
  from?: string;
}

/** The rows compared: the table's own (not its inheritance children's), unless `from` says otherwise. */
const fromItem = (t: QualifiedName & { from?: string }) => t.from ?? `ONLY ${quoteQualified(t)}`;

/** Row text of a keyless row shown to humans is cut here: it can be megabytes. */
const LABEL_CHARS = 200;

// The row text: ROW(...)::text, whose output rules are fixed for given session settings
// (setCanonicalSession), so equal rows give equal text on both servers.
const rowText = (t: ChecksumTable) => `ROW(${t.columns.map((c) => `t.${quoteIdent(c)}`).join(', ')})::text`;

const keyText = (t: ChecksumTable): string | null => {
  const key = t.keyColumns;
  if (!key || key.length === 0) return null;
  return key.length === 1
    ? `t.${quoteIdent(key[0] ?? '')}::text`
    : `ROW(${key.map((c) => `t.${quoteIdent(c)}`).join(', ')})::text`;
};

const positiveInt = (n: number) => {
  if (!Number.isInteger(n) || n < 1) throw new TypeError(`expected a whole number ≥ 1, got ${n}`);
  return n;
};

/**
 * FROM clause with one md5 per row (r.rh) and the row's bucket: the first 32 bits of md5(key text)
 * modulo the bucket count, so a key lands in the same bucket on both sides whatever its physical place.
 */
function digestFrom(t: ChecksumTable, buckets: number): { from: string; bucket: string } {
  const key = keyText(t);
  const keyHash = key === null ? 'r.rh' : `md5(${key})`;
  return {
    from: `FROM ${fromItem(t)} AS t CROSS JOIN LATERAL (SELECT md5(${rowText(t)}) AS rh) AS r`,
    bucket: `mod(('x' || substr(${keyHash}, 1, 8))::bit(32)::bigint, ${positiveInt(buckets)})::int`,
  };
}

export async function readRowCount(
  client: pg.Client,
  table: QualifiedName & { from?: string },
): Promise<number> {
  // ONLY: COPY of a table with inheritance children copies the parent's own rows alone.
  const { rows } = await client.query(`SELECT count(*) AS n FROM ${fromItem(table)} AS t`);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Row count and hash sum per bucket. The sum of signed 64-bit slices is order independent and, summed
 * as numeric (sum(bigint) is numeric), never overflows; buckets without rows are simply absent.
 */
export async function readBucketDigests(
  client: pg.Client,
  table: ChecksumTable,
  buckets: number,
): Promise<BucketDigest[]> {
  const { from, bucket } = digestFrom(table, buckets);
  const { rows } = await client.query(
    `SELECT d.bucket, count(*) AS n, sum(d.h)::text AS total
       FROM (SELECT ${bucket} AS bucket, ('x' || substr(r.rh, 1, 16))::bit(64)::bigint AS h ${from}) AS d
      GROUP BY d.bucket ORDER BY d.bucket`,
  );
  return rows.map((r) => ({ bucket: Number(r.bucket), rows: Number(r.n), sum: String(r.total) }));
}

let cursorSequence = 0;

/**
 * Streams (key, row hash) of the rows in `onlyBuckets`, ordered by key in "C" collation (byte order,
 * the same on both servers), in batches through a cursor so memory stays bounded. Needs an open
 * transaction; the cursor is closed when the consumer stops early.
 */
export async function* streamRowDigests(
  client: pg.Client,
  table: ChecksumTable,
  options: { buckets: number; onlyBuckets: readonly number[]; batchRows: number },
): AsyncGenerator<RowDigest> {
  if (options.onlyBuckets.length === 0) return;
  const { from, bucket } = digestFrom(table, options.buckets);
  const key = keyText(table);
  // Keyless rows are ordered by their hash (the whole row is the key) and shown by their text.
  const select =
    key === null
      ? `r.rh COLLATE "C" AS k, r.rh AS h, left(${rowText(table)}, ${LABEL_CHARS}) AS label`
      : `(${key}) COLLATE "C" AS k, r.rh AS h, NULL::text AS label`;
  const list = options.onlyBuckets.map(positiveIntOrZero).join(', ');
  cursorSequence += 1;
  const cursor = quoteIdent(`plm_validate_${cursorSequence}`);
  await client.query(
    `DECLARE ${cursor} NO SCROLL CURSOR FOR SELECT ${select} ${from} WHERE ${bucket} IN (${list}) ORDER BY 1, 2`,
  );
  try {
    for (;;) {
      const { rows } = await client.query(`FETCH FORWARD ${positiveInt(options.batchRows)} FROM ${cursor}`);
      for (const r of rows) yield { key: r.k, hash: r.h, label: r.label ?? r.k };
      if (rows.length < options.batchRows) return;
    }
  } finally {
    await client.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}

const positiveIntOrZero = (n: number) => (n === 0 ? 0 : positiveInt(n));

/** Replica identity index columns of these tables (those that have such an index), by tableKey. */
export async function readReplicaIdentityColumns(
  client: pg.Client,
  tables: readonly QualifiedName[],
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (tables.length === 0) return out;
  const { rows } = await client.query(
    `SELECT n.nspname AS schema, c.relname AS name, array_agg(a.attname::text ORDER BY k.ord) AS columns
       FROM unnest($1::text[], $2::text[]) AS want(schema, name)
       JOIN pg_namespace n ON n.nspname = want.schema
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = want.name
       JOIN pg_index i ON i.indrelid = c.oid AND i.indisreplident
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      GROUP BY 1, 2`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  for (const r of rows) out.set(tableKey(r), r.columns);
  return out;
}

/** Starts a REPEATABLE READ transaction and exports its snapshot, so other connections read the same point. */
export async function beginExported(client: pg.Client): Promise<string> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  const { rows } = await client.query('SELECT pg_export_snapshot() AS name');
  return rows[0].name as string;
}
