// The replay benchmark's data: pgbench tables for the keep-up load, a table with a primary key for the
// backlog, a marker table whose rows tell when a tool has applied everything before them, the backlog
// workload as SQL, and a content check of source against target.
import type pg from 'pg';
import type { LocalCluster } from '../src/adapters/postgres/local-cluster.js';
import { BENCH_DATABASE } from './copy-dataset.js';
import { withPgClient } from './with-pg-client.js';

export { BENCH_DATABASE };

export const BACKLOG_TABLE = 'bench_backlog';
export const MARKER_TABLE = 'bench_marker';

/** Every table the check compares between source and target. */
export const REPLAY_TABLES = [
  'pgbench_accounts',
  'pgbench_branches',
  'pgbench_tellers',
  'pgbench_history',
  BACKLOG_TABLE,
  MARKER_TABLE,
] as const;

export async function createReplayDataset(source: LocalCluster, scale: number): Promise<void> {
  await withPgClient(source.uri(), (client) => client.query(`CREATE DATABASE ${BENCH_DATABASE}`));
  // -I dtGvp: tables, server-side data, vacuum, primary keys (pgbench_history has none: it is insert-only, and
  // every tool replicates its inserts). No foreign keys: they would only slow every tool's apply alike.
  await source.run('pgbench', ['-i', '-q', '-I', 'dtGvp', '-s', String(scale), source.uri(BENCH_DATABASE)]);
  await withPgClient(source.uri(BENCH_DATABASE), async (client) => {
    await client.query(`
      CREATE TABLE ${BACKLOG_TABLE} (
        id bigint PRIMARY KEY,
        account_id integer NOT NULL,
        amount integer NOT NULL,
        note text NOT NULL,
        updated_at timestamptz
      )`);
    await client.query(`CREATE TABLE ${MARKER_TABLE} (id integer PRIMARY KEY, note text NOT NULL)`);
    await client.query('CHECKPOINT');
  });
}

export type BacklogKind = 'insert' | 'update' | 'delete';

/**
 * How one kind of backlog is cut into transactions, interleaved in one loop: `singles` one-row transactions;
 * after every `hundredEvery`-th of them a 100-row one; after every `tenThousandEvery`-th a 10,000-row one; and
 * once, after the `bigAt`-th, one of `bigRows` rows.
 */
export interface BacklogMix {
  kind: BacklogKind;
  firstId: number;
  rows: number;
  singles: number;
  hundredEvery: number;
  tenThousandEvery: number;
  big?: { at: number; rows: number };
}

/**
 * The backlog for `inserts` rows (a multiple of 100,000): inserts of ids 1..N (10% in 1-row, 20% in 100-row,
 * 50% in 10,000-row transactions and 20% in a single one), then updates of ids 1..N/2 and deletes of ids
 * N/2+1..N (each 20% in 1-row, 40% in 100-row and 40% in 10,000-row transactions).
 * At 1,000,000: 102,051 insert transactions (the big one 200,000 rows) and 102,020 each of updates and deletes.
 */
export function buildBacklogMixes(inserts: number): Record<BacklogKind, BacklogMix> {
  if (!Number.isInteger(inserts / 100_000) || inserts <= 0)
    throw new Error(`the backlog must be a positive multiple of 100,000 rows; got ${inserts}`);
  const singles = inserts / 10;
  const changeMix = (kind: BacklogKind, firstId: number): BacklogMix => ({
    kind,
    firstId,
    rows: inserts / 2,
    singles,
    hundredEvery: 50,
    // (N/5 rows in 10,000-row transactions) = N/50,000 of them, one per singles / (N/50,000) = 5,000 singles.
    tenThousandEvery: 5_000,
  });
  return {
    insert: {
      kind: 'insert',
      firstId: 1,
      rows: inserts,
      singles,
      hundredEvery: 50,
      tenThousandEvery: 2_000,
      big: { at: singles / 2, rows: inserts / 5 },
    },
    update: changeMix('update', 1),
    delete: changeMix('delete', inserts / 2 + 1),
  };
}

/** Transactions in a mix. */
export function countBacklogTransactions(mix: BacklogMix): number {
  return (
    mix.singles +
    Math.floor(mix.singles / mix.hundredEvery) +
    Math.floor(mix.singles / mix.tenThousandEvery) +
    (mix.big ? 1 : 0)
  );
}

/** Rows a mix touches; equals mix.rows for every mix buildBacklogMixes makes. */
export function countBacklogRows(mix: BacklogMix): number {
  return (
    mix.singles +
    100 * Math.floor(mix.singles / mix.hundredEvery) +
    10_000 * Math.floor(mix.singles / mix.tenThousandEvery) +
    (mix.big?.rows ?? 0)
  );
}

function buildRangeStatement(kind: BacklogKind, from: string, to: string): string {
  switch (kind) {
    case 'insert':
      return `INSERT INTO ${BACKLOG_TABLE} (id, account_id, amount, note)
        SELECT g, 1 + g % 100000, (g % 1000)::integer, md5(g::text) FROM generate_series(${from}, ${to}) AS g`;
    case 'update':
      return `UPDATE ${BACKLOG_TABLE} SET amount = amount + 1, updated_at = clock_timestamp() WHERE id BETWEEN ${from} AND ${to}`;
    case 'delete':
      return `DELETE FROM ${BACKLOG_TABLE} WHERE id BETWEEN ${from} AND ${to}`;
  }
}

/**
 * One DO block that runs the mix as separate transactions (COMMIT inside PL/pgSQL, PostgreSQL 11+): the
 * server commits ~100,000 transactions in seconds without a client round trip per transaction. It must be
 * sent as a simple query outside a transaction block (node-pg does that for a query without parameters).
 */
export function buildBacklogSql(mix: BacklogMix): string {
  const step = (rows: number) =>
    `${buildRangeStatement(mix.kind, 'next_id', `next_id + ${rows - 1}`)};
      next_id := next_id + ${rows};
      COMMIT;`;
  return `DO $backlog$
DECLARE
  next_id bigint := ${mix.firstId};
BEGIN
  FOR i IN 1..${mix.singles} LOOP
    ${step(1)}
    IF i % ${mix.hundredEvery} = 0 THEN
      ${step(100)}
    END IF;
    IF i % ${mix.tenThousandEvery} = 0 THEN
      ${step(10_000)}
    END IF;${
      mix.big
        ? `
    IF i = ${mix.big.at} THEN
      ${step(mix.big.rows)}
    END IF;`
        : ''
    }
  END LOOP;
END
$backlog$`;
}

export interface TableFingerprint {
  table: string;
  rows: number;
  /** sum(hashtext(row as text)): equal contents give equal sums. */
  hash: string;
}

/**
 * Row count and an order-independent hash of every benchmark table, to compare a target with its source.
 * Marker rows count up to `lastMarkerId`: the row written after the last marker need not have arrived.
 */
export async function readFingerprints(client: pg.Client, lastMarkerId: number): Promise<TableFingerprint[]> {
  const result: TableFingerprint[] = [];
  for (const table of REPLAY_TABLES) {
    const where = table === MARKER_TABLE ? `WHERE id <= ${Number(lastMarkerId)}` : '';
    const { rows } = await client.query<{ rows: string; hash: string }>(
      `SELECT count(*) AS rows, coalesce(sum(hashtext(t::text)::bigint), 0)::text AS hash FROM ${table} AS t ${where}`,
    );
    result.push({ table, rows: Number(rows[0]?.rows ?? 0), hash: rows[0]?.hash ?? '' });
  }
  return result;
}

/** One phrase per table whose count or hash differs; empty when the target matches. */
export function diffFingerprints(source: TableFingerprint[], target: TableFingerprint[]): string[] {
  return source.flatMap((expected) => {
    const actual = target.find((entry) => entry.table === expected.table);
    if (!actual) return [`${expected.table} is missing`];
    if (actual.rows !== expected.rows)
      return [`${expected.table} has ${actual.rows} rows, source ${expected.rows}`];
    if (actual.hash !== expected.hash)
      return [`${expected.table} differs in content (same ${actual.rows} rows)`];
    return [];
  });
}
