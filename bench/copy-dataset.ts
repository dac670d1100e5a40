// The copy benchmark's dataset (pgbench tables with their keys, a TOAST-heavy table, a table without a
// primary key, all sized by one scale) and the inventory that every peer's result is checked against.
import type { LocalCluster } from '../src/adapters/postgres/local-cluster.js';
import { withPgClient } from './with-pg-client.js';

export const BENCH_DATABASE = 'bench';

/** Rows per scale unit of the two extra tables; at scale 100 they are ~300 MB and ~100 MB. */
const DOCUMENT_ROWS_PER_SCALE = 525;
const EVENT_ROWS_PER_SCALE = 8_000;

export interface TableInventory {
  /** schema.table, quoted as PostgreSQL would print it. */
  name: string;
  rows: number;
  totalBytes: number;
  indexes: number;
  constraints: number;
}

export interface DatabaseInventory {
  databaseBytes: number;
  tables: TableInventory[];
}

export async function createCopyDataset(source: LocalCluster, scale: number): Promise<void> {
  await withPgClient(source.uri(), (client) => client.query(`CREATE DATABASE ${BENCH_DATABASE}`));
  // -I dtGvp: drop, create tables, generate server-side (no client round trip), vacuum, primary keys.
  // Foreign keys (f) are left out: the peers would each re-validate them, which measures the server.
  await source.run('pgbench', ['-i', '-q', '-I', 'dtGvp', '-s', String(scale), source.uri(BENCH_DATABASE)]);
  await withPgClient(source.uri(BENCH_DATABASE), async (client) => {
    await client.query(`
      CREATE TABLE bench_documents (
        id bigint PRIMARY KEY,
        account_id integer NOT NULL,
        created_at timestamptz NOT NULL,
        title text NOT NULL,
        body text NOT NULL
      )`);
    // body: 3 KiB of random bytes as base64 (~4 KB of text). pglz cannot save the 25% it requires on
    // such text, so the value stays uncompressed and is moved out of line into the TOAST table.
    // The aggregate names both the outer row (g) and its own rows (s): with g alone the subquery would run
    // once per statement, and with only outer columns the aggregate would belong to the outer query.
    await client.query(
      `INSERT INTO bench_documents
       SELECT g, 1 + g % 100000, timestamptz '2024-01-01' + g * interval '1 minute', 'document ' || g,
              translate(encode((SELECT string_agg(decode(md5(random()::text || g || s), 'hex'), ''::bytea)
                                FROM generate_series(1, 192) AS s), 'base64'), E'\\n', '')
       FROM generate_series(1, $1::bigint) AS g`,
      [DOCUMENT_ROWS_PER_SCALE * scale],
    );
    await client.query(`CREATE INDEX bench_documents_account_id_idx ON bench_documents (account_id)`);
    // An append-only log without a primary key: tools must copy it without a key to split on.
    await client.query(`
      CREATE TABLE bench_events (
        occurred_at timestamptz NOT NULL,
        device_id integer NOT NULL,
        kind text NOT NULL,
        reading double precision,
        note text
      )`);
    await client.query(
      `INSERT INTO bench_events
       SELECT timestamptz '2024-01-01' + g * interval '100 milliseconds', (random() * 10000)::int,
              (ARRAY['boot', 'reading', 'alarm', 'heartbeat'])[1 + g % 4], random() * 100, md5(g::text)
       FROM generate_series(1, $1::bigint) AS g`,
      [EVENT_ROWS_PER_SCALE * scale],
    );
    await client.query(`CREATE INDEX bench_events_occurred_at_idx ON bench_events (occurred_at)`);
    await client.query('VACUUM ANALYZE bench_documents');
    await client.query('VACUUM ANALYZE bench_events');
    await client.query('CHECKPOINT');
  });
}

/** Exact row counts (count(*), not estimates) plus index and constraint counts of every user table. */
export async function readDatabaseInventory(uri: string): Promise<DatabaseInventory> {
  return withPgClient(uri, async (client) => {
    const { rows: tables } = await client.query<{
      oid: string;
      name: string;
      total_bytes: string;
      indexes: string;
      constraints: string;
    }>(`
      SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name,
             pg_total_relation_size(c.oid) AS total_bytes,
             (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) AS indexes,
             (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid) AS constraints
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%'
      ORDER BY 2`);
    const inventory: TableInventory[] = [];
    for (const table of tables) {
      const { rows } = await client.query<{ count: string }>(`SELECT count(*) FROM ${table.name}`);
      inventory.push({
        name: table.name,
        rows: Number(rows[0]?.count ?? 0),
        totalBytes: Number(table.total_bytes),
        indexes: Number(table.indexes),
        constraints: Number(table.constraints),
      });
    }
    const { rows: size } = await client.query<{ bytes: string }>(
      'SELECT pg_database_size(current_database()) AS bytes',
    );
    return { databaseBytes: Number(size[0]?.bytes ?? 0), tables: inventory };
  });
}

/** What differs between the source and a copy, one phrase per problem; empty when the copy is complete. */
export function diffInventories(source: DatabaseInventory, copy: DatabaseInventory): string[] {
  const copied = new Map(copy.tables.map((table) => [table.name, table]));
  return source.tables.flatMap((table) => {
    const other = copied.get(table.name);
    if (!other) return [`${table.name} is missing`];
    return [
      ...(other.rows !== table.rows ? [`${table.name} has ${other.rows} rows, source ${table.rows}`] : []),
      ...(other.indexes !== table.indexes
        ? [`${table.name} has ${other.indexes} indexes, source ${table.indexes}`]
        : []),
      ...(other.constraints !== table.constraints
        ? [`${table.name} has ${other.constraints} constraints, source ${table.constraints}`]
        : []),
    ];
  });
}
