// Reads what the source holds: the tables to migrate with their columns, keys, replica identity and
// size, and the sequences. Run inside the exported snapshot where the answer must match the copy.
import type pg from 'pg';
import type { TableInfo } from '../../core/plan';

/** Schemas never migrated: the system's, ours, and extension internals handled by later releases. */
export const EXCLUDED_SCHEMAS = ['pg_catalog', 'information_schema', '_pg_live_migrate'];

const SCHEMA_FILTER = `n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND ($2::text[] IS NULL OR n.nspname = ANY($2::text[]))`;

/**
 * TimescaleDB's relations, when its catalog is in this database: `chunk_of` names the user hypertable a
 * chunk belongs to; `internal` marks what TimescaleDB manages itself (materialization and compression
 * hypertables and their chunks, its statistics tables), which is never migrated as a table.
 */
const TIMESCALE_JOIN = `
       LEFT JOIN LATERAL (
         SELECT h.schema_name::text AS schema, h.table_name::text AS name,
                (h.compression_state = 2 OR EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg ca
                                                     WHERE ca.mat_hypertable_id = h.id)) AS internal
           FROM _timescaledb_catalog.chunk ch JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
          WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname
       ) ts_chunk ON true
       LEFT JOIN LATERAL (
         SELECT true AS hypertable,
                (h.compression_state = 2 OR EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg ca
                                                     WHERE ca.mat_hypertable_id = h.id)) AS internal
           FROM _timescaledb_catalog.hypertable h WHERE h.schema_name = n.nspname AND h.table_name = c.relname
       ) ts_root ON true`;

/** Schemas of TimescaleDB's own objects: nothing in them is a user table (chunks are listed by their hypertable). */
export const TIMESCALE_SCHEMA_PATTERN = '\\_timescaledb\\_%';

/**
 * TimescaleDB's catalog in this database: 'known' when it has the layout read here (checked with 2.28),
 * 'unknown' for another layout (its schemas are then left out whole; preflight refuses hypertables it
 * cannot read), 'none' without TimescaleDB.
 */
export async function timescaleCatalog(client: pg.Client): Promise<'known' | 'unknown' | 'none'> {
  const { rows } = await client.query(
    `SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL AS present,
            (SELECT count(*) FROM pg_attribute a
              WHERE (a.attrelid, a.attname) IN ((to_regclass('_timescaledb_catalog.chunk'), 'schema_name'),
                                                (to_regclass('_timescaledb_catalog.chunk'), 'table_name'),
                                                (to_regclass('_timescaledb_catalog.hypertable'), 'compression_state'))
                AND NOT a.attisdropped) = 3
              AND to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL AS known
      WHERE to_regclass('_timescaledb_catalog.chunk') IS NOT NULL AND to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL`,
  );
  if (!rows[0]?.present) return 'none';
  return rows[0].known ? 'known' : 'unknown';
}

export async function listTables(client: pg.Client, schemas: string[] | null): Promise<TableInfo[]> {
  // attgenerated exists from PostgreSQL 12; before that no column is generated.
  const version = Number((await client.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
  const notGenerated = version >= 120000 ? "a.attgenerated = ''" : 'true';
  const catalog = await timescaleCatalog(client);
  const timescale = catalog === 'known';
  // A chunk of a user hypertable is listed when its hypertable's schema is migrated; every other relation
  // in TimescaleDB's schemas, and TimescaleDB's internal hypertables, are not.
  const filter = timescale
    ? `(CASE WHEN ts_chunk.schema IS NOT NULL
             THEN NOT ts_chunk.internal AND ts_chunk.schema <> ALL($1::text[]) AND ($2::text[] IS NULL OR ts_chunk.schema = ANY($2::text[]))
             ELSE ${SCHEMA_FILTER} AND n.nspname NOT LIKE '${TIMESCALE_SCHEMA_PATTERN}' AND NOT coalesce(ts_root.internal, false) END)`
    : catalog === 'unknown'
      ? `${SCHEMA_FILTER} AND n.nspname NOT LIKE '${TIMESCALE_SCHEMA_PATTERN}'`
      : SCHEMA_FILTER;
  const { rows } = await client.query(
    `SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relpersistence AS persistence,
            c.relreplident AS replident, c.relispartition AS is_partition,
            CASE WHEN c.relkind = 'r' THEN pg_table_size(c.oid) ELSE 0 END AS bytes,
            CASE WHEN c.relkind = 'r' THEN pg_relation_size(c.oid) / current_setting('block_size')::int ELSE 0 END AS pages,
            coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND ${notGenerated}),
                     '{}') AS columns,
            coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                     '{}') AS all_columns,
            pk.columns AS pk_columns, pk.types AS pk_types,
            ri.columns AS ri_columns,
            ${timescale ? 'ts_chunk.schema AS chunk_of_schema, ts_chunk.name AS chunk_of_name, ts_root.hypertable AS is_hypertable' : 'NULL AS chunk_of_schema, NULL AS chunk_of_name, NULL AS is_hypertable'}
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN LATERAL (
         SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns, array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord) AS types
           FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = c.oid AND i.indisprimary
       ) pk ON true
       LEFT JOIN LATERAL (
         SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns
           FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = c.oid AND i.indisreplident
       ) ri ON true${timescale ? TIMESCALE_JOIN : ''}
      WHERE c.relkind IN ('r', 'p', 'f') AND c.relpersistence <> 't' AND ${filter}
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY n.nspname, c.relname`,
    [EXCLUDED_SCHEMAS, schemas],
  );
  return rows.map((r): TableInfo => {
    const pkColumns: string[] | null = r.pk_columns;
    const identity: TableInfo['replicaIdentity'] =
      r.replident === 'f'
        ? 'full'
        : r.replident === 'i'
          ? 'index'
          : r.replident === 'n'
            ? 'nothing'
            : 'default';
    const keyColumns = identity === 'index' ? r.ri_columns : identity === 'default' ? pkColumns : null;
    const intTypes = ['smallint', 'integer', 'bigint'];
    return {
      schema: r.schema,
      name: r.name,
      kind: r.kind === 'p' ? 'partitioned' : r.kind === 'f' ? 'foreign' : 'table',
      unlogged: r.persistence === 'u',
      isPartition: r.is_partition,
      columns: r.columns,
      allColumns: r.all_columns,
      primaryKey: pkColumns,
      replicaIdentity: identity,
      hasReplicaIdentity: identity === 'full' || (keyColumns !== null && keyColumns.length > 0),
      integerKey:
        pkColumns?.length === 1 && intTypes.includes((r.pk_types as string[])[0] ?? '')
          ? (pkColumns[0] ?? null)
          : null,
      bytes: Number(r.bytes),
      pages: Number(r.pages),
      ...(r.chunk_of_schema ? { chunkOf: { schema: r.chunk_of_schema, name: r.chunk_of_name } } : {}),
      ...(r.is_hypertable ? { hypertable: true } : {}),
    };
  });
}

export interface SequenceValue {
  schema: string;
  name: string;
  lastValue: string | null;
  isCalled: boolean;
}

/** Sequence positions as seen by this transaction (call inside the snapshot). */
export async function readSequences(client: pg.Client, schemas: string[] | null): Promise<SequenceValue[]> {
  const { rows } = await client.query(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND ${SCHEMA_FILTER}
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1, 2`,
    [EXCLUDED_SCHEMAS, schemas],
  );
  const out: SequenceValue[] = [];
  for (const r of rows) {
    // pg_sequences hides last_value without USAGE; reading the relation itself works with SELECT.
    const q = `"${String(r.schema).replaceAll('"', '""')}"."${String(r.name).replaceAll('"', '""')}"`;
    const { rows: v } = await client.query(`SELECT last_value::text AS last_value, is_called FROM ${q}`);
    out.push({
      schema: r.schema,
      name: r.name,
      lastValue: v[0]?.last_value ?? null,
      isCalled: v[0]?.is_called ?? false,
    });
  }
  return out;
}

export async function listMaterializedViews(
  client: pg.Client,
  schemas: string[] | null,
): Promise<{ schema: string; name: string }[]> {
  const { rows } = await client.query(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'm' AND c.relispopulated AND ${SCHEMA_FILTER}
      ORDER BY c.oid`,
    [EXCLUDED_SCHEMAS, schemas],
  );
  return rows;
}
