// TimescaleDB on both sides of a migration: what the source's catalog says about hypertables, continuous
// aggregates and jobs (read in the snapshot), and how the target gets the same through TimescaleDB's own
// API (create_hypertable, add_dimension, ALTER TABLE … SET (timescaledb.compress), CREATE MATERIALIZED
// VIEW … WITH (timescaledb.continuous), add_*_policy, add_job, alter_job). Chunks are matched across the
// two sides by their dimension constraints, which TimescaleDB derives from the same intervals.
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { Change } from '../../core/changes';
import { MigrationError } from '../../core/errors';
import { tableKey } from '../../core/plan';
import { type QualifiedName, quoteIdent, quoteLiteral, quoteQualified } from '../../core/sql';
import { CONTROL_SCHEMA } from './control-schema';
import { listTables } from './source-catalog';

export interface TsDimension {
  column: string;
  /** format_type of the column, e.g. "timestamp with time zone", "bigint". */
  columnType: string;
  /** Range (time or integer) partitioning, or hash (space) partitioning. */
  kind: 'range' | 'hash';
  /** Range: the chunk interval in the column's unit (microseconds for time types). */
  intervalLength: string | null;
  /** Hash: the number of partitions. */
  slices: number | null;
  partitioningFunc: QualifiedName | null;
  integerNowFunc: QualifiedName | null;
}

export interface TsHypertable extends QualifiedName {
  id: number;
  dimensions: TsDimension[];
  /** Compression settings when compression is enabled (segment-by and order-by as TimescaleDB prints them). */
  compression: { segmentBy: string | null; orderBy: string | null } | null;
}

export interface TsContinuousAggregate extends QualifiedName {
  matHypertableId: number;
  /** The defining query, with every name qualified (read with an empty search_path). */
  definition: string;
  materializedOnly: boolean;
  /** The hypertable (or, for an aggregate on an aggregate, the materialization) it aggregates. */
  rawHypertable: QualifiedName;
}

export interface TsJob {
  id: number;
  proc: QualifiedName;
  /** The hypertable or continuous aggregate the job works on. */
  relation: QualifiedName | null;
  config: Record<string, unknown> | null;
  scheduleInterval: string;
  maxRuntime: string;
  maxRetries: number;
  retryPeriod: string;
  scheduled: boolean;
  fixedSchedule: boolean;
  initialStart: string | null;
  check: QualifiedName | null;
}

export interface TimescaleLayout {
  version: string;
  /** The extension's schema, quoted: its API functions are called qualified (restores run with no search_path). */
  api: string;
  hypertables: TsHypertable[];
  continuousAggregates: TsContinuousAggregate[];
  /** User jobs and policies (job_id >= 1000). */
  jobs: TsJob[];
  /** Schemas holding chunks of the migrated hypertables (for the publication of new chunks). */
  chunkSchemas: string[];
  /** Chunks of the migrated hypertables that live in a user schema (not _timescaledb_*). */
  chunksInUserSchemas: QualifiedName[];
}

const TIME_TYPES = new Set(['timestamp with time zone', 'timestamp without time zone', 'date']);

/**
 * The source's TimescaleDB objects in the schemas to migrate, null without the extension. Call inside the
 * snapshot: the layout is the one the copy sees.
 */
export async function readTimescaleLayout(
  client: pg.Client,
  schemas: string[] | null,
): Promise<TimescaleLayout | null> {
  const ext = await client.query(
    `SELECT e.extversion, n.nspname::text AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'timescaledb'`,
  );
  if (ext.rows.length === 0) return null;
  const inSchemas = (schema: string) => schemas === null || schemas.includes(schema);
  const userHypertables = `SELECT h.* FROM _timescaledb_catalog.hypertable h
     WHERE h.compression_state <> 2
       AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id)`;
  const { rows: hts } = await client.query(
    `SELECT h.id, h.schema_name::text AS schema, h.table_name::text AS name, h.compression_state,
            -- Built here with every name quoted (the information view's lists are not).
            (SELECT string_agg(quote_ident(c), ', ' ORDER BY o) FROM unnest(s.segmentby) WITH ORDINALITY AS x(c, o)) AS segmentby,
            (SELECT string_agg(quote_ident(c) || CASE WHEN s.orderby_desc[o] THEN ' DESC' ELSE '' END
                                 || CASE WHEN s.orderby_nullsfirst[o] AND NOT s.orderby_desc[o] THEN ' NULLS FIRST'
                                         WHEN NOT s.orderby_nullsfirst[o] AND s.orderby_desc[o] THEN ' NULLS LAST' ELSE '' END,
                               ', ' ORDER BY o)
               FROM unnest(s.orderby) WITH ORDINALITY AS x(c, o)) AS orderby
       FROM (${userHypertables}) h
       LEFT JOIN _timescaledb_catalog.compression_settings s
              ON s.relid = format('%I.%I', h.schema_name, h.table_name)::regclass
      ORDER BY h.id`,
  );
  const { rows: dims } = await client.query(
    `SELECT d.hypertable_id, d.column_name::text AS column, format_type(d.column_type, NULL) AS column_type,
            d.num_slices, d.interval_length::text AS interval_length,
            d.partitioning_func_schema::text AS pf_schema, d.partitioning_func::text AS pf_name,
            d.integer_now_func_schema::text AS now_schema, d.integer_now_func::text AS now_name
       FROM _timescaledb_catalog.dimension d ORDER BY d.hypertable_id, d.id`,
  );
  const hypertables: TsHypertable[] = hts
    .filter((h) => inSchemas(h.schema))
    .map((h) => ({
      id: h.id,
      schema: h.schema,
      name: h.name,
      compression: h.compression_state === 1 ? { segmentBy: h.segmentby, orderBy: h.orderby } : null,
      dimensions: dims
        .filter((d) => d.hypertable_id === h.id)
        .map(
          (d): TsDimension => ({
            column: d.column,
            columnType: d.column_type,
            kind: d.num_slices === null ? 'range' : 'hash',
            intervalLength: d.interval_length,
            slices: d.num_slices,
            partitioningFunc:
              d.pf_name && !(d.pf_schema === '_timescaledb_functions' && d.pf_name === 'get_partition_hash')
                ? { schema: d.pf_schema, name: d.pf_name }
                : null,
            integerNowFunc: d.now_name ? { schema: d.now_schema, name: d.now_name } : null,
          }),
        ),
    }));
  const htNames = new Map<number, QualifiedName>(hts.map((h) => [h.id, { schema: h.schema, name: h.name }]));
  // An empty search_path makes pg_get_viewdef qualify every name: the query means the same on the target.
  const searchPath = (await client.query(`SELECT current_setting('search_path') AS p`)).rows[0].p as string;
  await client.query(`SELECT set_config('search_path', '', false)`);
  const { rows: caggs } = await client.query(
    `SELECT ca.user_view_schema::text AS schema, ca.user_view_name::text AS name, ca.mat_hypertable_id,
            ca.materialized_only,
            pg_get_viewdef(format('%I.%I', ca.direct_view_schema, ca.direct_view_name)::regclass) AS definition,
            h.schema_name::text AS raw_schema, h.table_name::text AS raw_name
       FROM _timescaledb_catalog.continuous_agg ca
       JOIN _timescaledb_catalog.hypertable h ON h.id = ca.raw_hypertable_id
      ORDER BY ca.mat_hypertable_id`,
  );
  await client.query(`SELECT set_config('search_path', $1, false)`, [searchPath]);
  const continuousAggregates = caggs
    .filter((c) => inSchemas(c.schema))
    .map((c) => ({
      schema: c.schema,
      name: c.name,
      matHypertableId: c.mat_hypertable_id,
      definition: String(c.definition).trim().replace(/;$/, ''),
      materializedOnly: c.materialized_only,
      rawHypertable: { schema: c.raw_schema, name: c.raw_name },
    }));
  for (const c of continuousAggregates) htNames.set(c.matHypertableId, c);
  const { rows: jobs } = await client.query(
    `SELECT j.id, j.proc_schema::text, j.proc_name::text, j.hypertable_id, j.config,
            j.schedule_interval::text, j.max_runtime::text, j.max_retries, j.retry_period::text,
            j.scheduled, j.fixed_schedule, j.initial_start::text,
            j.check_schema::text, j.check_name::text
       FROM _timescaledb_config.bgw_job j WHERE j.id >= 1000 ORDER BY j.id`,
  );
  const relations = new Set([...hypertables, ...continuousAggregates].map((r) => `${r.schema}.${r.name}`));
  const tsJobs = jobs
    .map(
      (j): TsJob => ({
        id: j.id,
        proc: { schema: j.proc_schema, name: j.proc_name },
        relation: j.hypertable_id === null ? null : (htNames.get(j.hypertable_id) ?? null),
        config: j.config,
        scheduleInterval: j.schedule_interval,
        maxRuntime: j.max_runtime,
        maxRetries: j.max_retries,
        retryPeriod: j.retry_period,
        scheduled: j.scheduled,
        fixedSchedule: j.fixed_schedule,
        initialStart: j.initial_start,
        check: j.check_name ? { schema: j.check_schema, name: j.check_name } : null,
      }),
    )
    // A policy on a relation left out of the migration stays behind with it.
    .filter((j) => j.relation === null || relations.has(`${j.relation.schema}.${j.relation.name}`));
  // The chunk schemas of the migrated hypertables only: another hypertable's may be a user schema.
  const { rows: chunkSchemas } = await client.query(
    `SELECT DISTINCT associated_schema_name::text AS schema FROM _timescaledb_catalog.hypertable
      WHERE id = ANY($1::int[]) ORDER BY 1`,
    [hypertables.map((h) => h.id)],
  );
  // Chunks kept in a user schema (associated_schema_name): left out of the dump one by one.
  const { rows: chunksInUserSchemas } = await client.query(
    `SELECT schema_name::text AS schema, table_name::text AS name FROM _timescaledb_catalog.chunk
      WHERE hypertable_id = ANY($1::int[]) AND schema_name NOT LIKE '\\_timescaledb\\_%' ORDER BY 1, 2`,
    [hypertables.map((h) => h.id)],
  );
  return {
    version: ext.rows[0].extversion,
    api: quoteIdent(ext.rows[0].schema),
    hypertables,
    continuousAggregates,
    jobs: tsJobs,
    chunkSchemas: chunkSchemas.map((r) => r.schema),
    chunksInUserSchemas,
  };
}

const isTimeType = (type: string) => TIME_TYPES.has(type);

/** A range dimension's interval as an SQL expression of the type TimescaleDB expects for the column. */
function intervalExpr(d: TsDimension): string {
  const length = BigInt(d.intervalLength ?? '0').toString();
  return isTimeType(d.columnType) ? `(${length} * interval '1 microsecond')` : `${length}::${d.columnType}`;
}

function dimensionExpr(api: string, d: TsDimension): string {
  if (d.kind === 'range') return `${api}.by_range(${quoteLiteral(d.column)}, ${intervalExpr(d)})`;
  const func = d.partitioningFunc
    ? `, partition_func => ${quoteLiteral(`${quoteQualified(d.partitioningFunc)}`)}::regproc`
    : '';
  return `${api}.by_hash(${quoteLiteral(d.column)}, ${Number(d.slices)}${func})`;
}

/**
 * SQL that turns the restored (empty) tables into the same hypertables: dimensions, chunk intervals and
 * compression settings. Runs in the transaction of the pre-data restore. The indexes come with post-data,
 * so TimescaleDB's default indexes are not created.
 */
export function buildHypertableSql(layout: TimescaleLayout): string {
  const out: string[] = [];
  for (const h of layout.hypertables) {
    const table = quoteLiteral(quoteQualified(h));
    const [first, ...rest] = h.dimensions;
    if (!first) continue;
    out.push(
      `SELECT ${layout.api}.create_hypertable(${table}, ${dimensionExpr(layout.api, first)}, create_default_indexes => false);`,
    );
    for (const d of rest)
      out.push(`SELECT ${layout.api}.add_dimension(${table}, ${dimensionExpr(layout.api, d)});`);
    const now = h.dimensions.find((d) => d.integerNowFunc)?.integerNowFunc;
    if (now)
      out.push(`SELECT ${layout.api}.set_integer_now_func(${table}, ${quoteLiteral(quoteQualified(now))});`);
    if (h.compression) {
      const options = [
        'timescaledb.compress',
        ...(h.compression.segmentBy
          ? [`timescaledb.compress_segmentby = ${quoteLiteral(h.compression.segmentBy)}`]
          : []),
        ...(h.compression.orderBy
          ? [`timescaledb.compress_orderby = ${quoteLiteral(h.compression.orderBy)}`]
          : []),
      ];
      out.push(`ALTER TABLE ${quoteQualified(h)} SET (${options.join(', ')});`);
    }
  }
  return out.join('\n');
}

export interface TsChunk extends QualifiedName {
  hypertable: QualifiedName;
  /** The chunk's dimension constraints, e.g. `("time" >= '…' AND "time" < '…')`: the same on both sides. */
  predicate: string;
  compressed: boolean;
  /** [start, end) on the primary dimension, in TimescaleDB's internal units. */
  range: [bigint, bigint] | null;
}

/**
 * The chunks of the given hypertables with their dimension constraints. TimeZone is set to UTC for the
 * read so both sides print the same bounds.
 */
export async function readChunks(
  client: pg.Client,
  hypertables: readonly QualifiedName[],
): Promise<TsChunk[]> {
  if (hypertables.length === 0) return [];
  await client.query(`SELECT set_config('TimeZone', 'UTC', false)`);
  const { rows } = await client.query(
    `SELECT ch.schema_name::text AS schema, ch.table_name::text AS name,
            h.schema_name::text AS ht_schema, h.table_name::text AS ht_name,
            (ch.compressed_chunk_id IS NOT NULL) AS compressed,
            (SELECT string_agg(regexp_replace(pg_get_constraintdef(k.oid), '^CHECK ', ''), ' AND ' ORDER BY pg_get_constraintdef(k.oid) COLLATE "C")
               FROM pg_constraint k
              WHERE k.conrelid = format('%I.%I', ch.schema_name, ch.table_name)::regclass AND k.contype = 'c'
                AND k.conname LIKE 'constraint\\_%') AS predicate,
            -- The primary (first) dimension's range, in TimescaleDB's internal units (the same on both sides).
            (SELECT array[ds.range_start, ds.range_end]::text[]
               FROM _timescaledb_catalog.chunk_constraint cc
               JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id
              WHERE cc.chunk_id = ch.id
                AND ds.dimension_id = (SELECT min(d.id) FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = h.id)
              LIMIT 1) AS range
       FROM _timescaledb_catalog.chunk ch
       JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
       JOIN unnest($1::text[], $2::text[]) AS want(schema, name) ON want.schema = h.schema_name AND want.name = h.table_name
      WHERE NOT ch.osm_chunk
      ORDER BY ch.id`,
    [hypertables.map((h) => h.schema), hypertables.map((h) => h.name)],
  );
  return rows.map((r) => ({
    schema: r.schema,
    name: r.name,
    hypertable: { schema: r.ht_schema, name: r.ht_name },
    predicate: r.predicate ?? 'true',
    compressed: r.compressed,
    range: r.range ? [BigInt(r.range[0]), BigInt(r.range[1])] : null,
  }));
}

const chunkKey = (c: TsChunk) => `${c.hypertable.schema}\u0000${c.hypertable.name}\u0000${c.predicate}`;

/**
 * Compresses the target chunks that hold rows of chunks compressed on the source: those whose primary range
 * only overlaps compressed source chunks (the sides' chunk bounds differ where the source's chunk interval
 * changed over time). Chunks already compressed as they were copied are left alone.
 */
export async function compressLikeSource(
  source: pg.Client,
  target: pg.Client,
  layout: TimescaleLayout,
): Promise<number> {
  const sourceChunks = await readChunks(source, layout.hypertables);
  let count = 0;
  for (const chunk of await readChunks(target, layout.hypertables)) {
    if (chunk.compressed || !chunk.range) continue;
    const [start, end] = chunk.range;
    const overlapping = sourceChunks.filter(
      (c) => sameTable(c.hypertable, chunk.hypertable) && c.range && c.range[0] < end && c.range[1] > start,
    );
    if (overlapping.length === 0 || !overlapping.every((c) => c.compressed)) continue;
    await target.query(`SELECT ${layout.api}.compress_chunk($1::regclass, if_not_compressed => true)`, [
      quoteQualified(chunk),
    ]);
    count += 1;
  }
  return count;
}

const sameTable = (a: QualifiedName, b: QualifiedName) => tableKey(a) === tableKey(b);

/**
 * Drops the target chunks whose rows a retention policy or drop_chunks removed on the source during the
 * migration (dropping a chunk is not a row change, so the replay never sees it): the target chunks that
 * match no source chunk and lie wholly before the source's oldest chunk of that hypertable. Other unmatched
 * chunks (the source's chunk interval changed over time) are left to the cutover's comparison.
 */
export async function dropChunksGoneFromSource(
  source: pg.Client,
  target: pg.Client,
  layout: TimescaleLayout,
): Promise<TsChunk[]> {
  const sourceChunks = await readChunks(source, layout.hypertables);
  const onSource = new Set(sourceChunks.map(chunkKey));
  const gone = (await readChunks(target, layout.hypertables)).filter((c) => {
    if (onSource.has(chunkKey(c)) || !c.range) return false;
    const starts = sourceChunks
      .filter((s) => sameTable(s.hypertable, c.hypertable) && s.range)
      .map((s) => (s.range as [bigint, bigint])[0]);
    const oldest = starts.length ? starts.reduce((a, b) => (b < a ? b : a)) : null;
    return oldest === null || c.range[1] <= oldest;
  });
  for (const chunk of gone) await target.query(`DROP TABLE ${quoteQualified(chunk)}`);
  return gone;
}

const J = `${quoteIdent(CONTROL_SCHEMA)}.ts_job`;

const POLICY_ARGS: Record<string, (config: Record<string, unknown>) => [string, unknown][]> = {
  policy_compression: (c) =>
    'compress_created_before' in c
      ? [['compress_created_before', c.compress_created_before]]
      : [['compress_after', c.compress_after]],
  policy_retention: (c) =>
    'drop_created_before' in c
      ? [['drop_created_before', c.drop_created_before]]
      : [['drop_after', c.drop_after]],
  policy_refresh_continuous_aggregate: (c) => [
    ['start_offset', c.start_offset ?? null],
    ['end_offset', c.end_offset ?? null],
  ],
  policy_reorder: (c) => [['index_name', c.index_name]],
};

const POLICY_FUNCTIONS: Record<string, string> = {
  policy_compression: 'add_compression_policy',
  policy_retention: 'add_retention_policy',
  policy_refresh_continuous_aggregate: 'add_continuous_aggregate_policy',
  policy_reorder: 'add_reorder_policy',
};

/** A policy argument: text values are intervals (or names), numbers are in the time column's integer unit. */
function policyArg(name: string, value: unknown, integerType: string | null): string {
  if (value === null || value === undefined) return `${name} => NULL`;
  if (name === 'index_name') return `${name} => ${quoteLiteral(String(value))}`;
  if (typeof value === 'number') return `${name} => ${Math.trunc(value)}::${integerType ?? 'bigint'}`;
  return `${name} => ${quoteLiteral(String(value))}::interval`;
}

/**
 * Creates the continuous aggregates (empty: they are refreshed at cutover) and the jobs, paused, on the
 * target, and records which target job stands for which source job. One transaction with the caller's
 * step mark. Returns what it skipped (jobs of an unknown kind) for the log.
 */
export async function createCaggsAndJobs(
  target: pg.Client,
  migrationId: string,
  layout: TimescaleLayout,
): Promise<{ caggs: number; jobs: number; skipped: string[] }> {
  for (const c of layout.continuousAggregates) {
    await target.query(
      `CREATE MATERIALIZED VIEW ${quoteQualified(c)} WITH (timescaledb.continuous, timescaledb.materialized_only = ${c.materializedOnly})
         AS ${c.definition} WITH NO DATA`,
    );
  }
  const skipped: string[] = [];
  let created = 0;
  const timeTypeOf = (relation: QualifiedName | null): string | null => {
    // A policy on a continuous aggregate is in its raw hypertable's time units.
    const cagg = layout.continuousAggregates.find((c) => relation && sameTable(c, relation));
    const raw = cagg?.rawHypertable ?? relation;
    const h = layout.hypertables.find((x) => raw && sameTable(x, raw));
    const type = h?.dimensions[0]?.columnType;
    return type && !isTimeType(type) ? type : null;
  };
  for (const job of layout.jobs) {
    const internal =
      job.proc.schema === '_timescaledb_functions' || job.proc.schema === '_timescaledb_internal';
    let id: number;
    if (internal) {
      const fn = POLICY_FUNCTIONS[job.proc.name];
      const args = POLICY_ARGS[job.proc.name];
      if (!fn || !args || !job.relation || !job.config) {
        skipped.push(`job ${job.id} (${job.proc.name})`);
        continue;
      }
      const list = args(job.config).map(([name, value]) => policyArg(name, value, timeTypeOf(job.relation)));
      if (fn === 'add_continuous_aggregate_policy')
        list.push(`schedule_interval => ${quoteLiteral(job.scheduleInterval)}::interval`);
      const { rows } = await target.query(
        `SELECT ${layout.api}.${fn}(${quoteLiteral(quoteQualified(job.relation))}::regclass, ${list.join(', ')}) AS id`,
      );
      id = rows[0].id;
      // The source's own config (every key, e.g. a batch limit) with the target's hypertable ids.
      const own = (await target.query('SELECT config FROM _timescaledb_config.bgw_job WHERE id = $1', [id]))
        .rows[0].config as Record<string, unknown>;
      const config = { ...job.config };
      for (const key of ['hypertable_id', 'mat_hypertable_id']) if (key in own) config[key] = own[key];
      await target.query(`SELECT ${layout.api}.alter_job($1, config => $2::jsonb)`, [
        id,
        JSON.stringify(config),
      ]);
    } else {
      const { rows } = await target.query(
        `SELECT ${layout.api}.add_job($1::regproc, $2::interval, config => $3::jsonb, initial_start => $4::timestamptz,
                               scheduled => false, check_config => $5::regproc, fixed_schedule => $6) AS id`,
        [
          quoteQualified(job.proc),
          job.scheduleInterval,
          job.config === null ? null : JSON.stringify(job.config),
          job.initialStart,
          job.check ? quoteQualified(job.check) : null,
          job.fixedSchedule,
        ],
      );
      id = rows[0].id;
    }
    await target.query(
      `SELECT ${layout.api}.alter_job($1, schedule_interval => $2::interval, max_runtime => $3::interval,
                               max_retries => $4, retry_period => $5::interval, scheduled => false)`,
      [id, job.scheduleInterval, job.maxRuntime, job.maxRetries, job.retryPeriod],
    );
    await target.query(
      `INSERT INTO ${J} (migration_id, source_job_id, target_job_id) VALUES ($1, $2, $3)
       ON CONFLICT (migration_id, source_job_id) DO UPDATE SET target_job_id = EXCLUDED.target_job_id`,
      [migrationId, job.id, id],
    );
    created += 1;
  }
  return { caggs: layout.continuousAggregates.length, jobs: created, skipped };
}

/** A continuous aggregate's materialization hypertable, as the catalog of `client`'s database names it. */
async function materializationOf(
  client: pg.Client,
  cagg: QualifiedName,
): Promise<TsMaterialization | undefined> {
  const { rows } = await client.query(
    `SELECT m.schema_name::text AS schema, m.table_name::text AS name,
            r.schema_name::text AS raw_schema, r.table_name::text AS raw_name,
            (SELECT d.column_name::text FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = r.id ORDER BY d.id LIMIT 1) AS raw_column,
            (SELECT format_type(d.column_type, NULL) FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = r.id ORDER BY d.id LIMIT 1) AS raw_type
       FROM _timescaledb_catalog.continuous_agg ca
       JOIN _timescaledb_catalog.hypertable m ON m.id = ca.mat_hypertable_id
       JOIN _timescaledb_catalog.hypertable r ON r.id = ca.raw_hypertable_id
      WHERE ca.user_view_schema = $1 AND ca.user_view_name = $2`,
    [cagg.schema, cagg.name],
  );
  const r = rows[0];
  return r
    ? {
        schema: r.schema,
        name: r.name,
        raw: { schema: r.raw_schema, name: r.raw_name },
        rawColumn: r.raw_column,
        rawType: r.raw_type,
      }
    : undefined;
}

interface TsMaterialization extends QualifiedName {
  raw: QualifiedName;
  rawColumn: string;
  rawType: string;
}

/**
 * Copies each continuous aggregate's materialized rows into the target's (just created) aggregate. Buckets
 * whose raw data a retention policy has already dropped on the source exist nowhere else; the rest is
 * refreshed from the raw data at cutover anyway. Returns the rows copied.
 */
export async function copyMaterializations(
  source: pg.Client,
  target: pg.Client,
  layout: TimescaleLayout,
): Promise<number> {
  let total = 0;
  for (const c of layout.continuousAggregates) {
    const [from, into] = [await materializationOf(source, c), await materializationOf(target, c)];
    if (!from || !into) throw new Error(`continuous aggregate ${quoteQualified(c)} has no materialization`);
    const { rows } = await source.query(
      `SELECT array_agg(a.attname::text ORDER BY a.attnum) AS columns FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`,
      [quoteQualified(from)],
    );
    const columns = ((rows[0]?.columns ?? []) as string[]).map(quoteIdent).join(', ');
    const reader = source.query(copyTo(`COPY (SELECT ${columns} FROM ${quoteQualified(from)}) TO STDOUT`));
    const writer = target.query(copyFrom(`COPY ${quoteQualified(into)} (${columns}) FROM STDIN`));
    await pipeline(reader, writer);
    total += writer.rowCount;
  }
  return total;
}

/**
 * Refreshes every continuous aggregate on the target, in creation order (an aggregate on another comes
 * later). Without `touched` (after the copy): over the range its raw data covers, from the earliest raw row
 * on; older buckets keep the materialized rows copied from the source (their raw data is gone). With
 * `touched` (at cutover): only from the earliest time the replayed changes reached, rounded down to the
 * aggregate's bucket (forced: no invalidation was logged for them), and not at all where nothing changed;
 * an aggregate whose buckets cannot be rounded here (variable width, origin, offset, time zone) or that
 * aggregates another one is refreshed from the earliest raw row on. Returns how many were refreshed.
 */
export async function refreshContinuousAggregates(
  target: pg.Client,
  layout: TimescaleLayout,
  touched?: TouchedRanges,
): Promise<number> {
  const userHypertables = new Set(layout.hypertables.map(tableKey));
  let refreshed = 0;
  for (const c of layout.continuousAggregates) {
    const m = await materializationOf(target, c);
    if (!m) continue;
    const rawKey = tableKey(m.raw);
    let start: string | null;
    let force = false;
    const bound = touched && userHypertables.has(rawKey) ? touched.bound(rawKey) : null;
    if (touched && userHypertables.has(rawKey) && bound === undefined) continue;
    if (bound !== null && bound !== undefined) {
      start = await bucketStart(target, layout, m, bound);
      force = start !== null;
    } else start = null;
    if (start === null) {
      const { rows } = await target.query(
        `SELECT min(${quoteIdent(m.rawColumn)})::text AS start FROM ${quoteQualified(m.raw)}`,
      );
      start = (rows[0]?.start as string | null) ?? null;
      if (start === null) continue;
      // At cutover the replayed changes logged no invalidation: only a forced refresh recomputes them.
      force = Boolean(touched);
    }
    await target.query(
      `CALL ${layout.api}.refresh_continuous_aggregate($1::regclass, $2::${m.rawType}, NULL${force ? ', force => true' : ''})`,
      [quoteQualified(c), start],
    );
    refreshed += 1;
  }
  return refreshed;
}

/** The start of the aggregate's bucket holding `value`, or null when its buckets are not a plain fixed width. */
async function bucketStart(
  target: pg.Client,
  layout: TimescaleLayout,
  m: TsMaterialization,
  value: string,
): Promise<string | null> {
  const { rows } = await target.query(
    `SELECT f.bucket_width, f.bucket_fixed_width AND f.bucket_origin IS NULL AND f.bucket_offset IS NULL
            AND f.bucket_timezone IS NULL AS plain
       FROM _timescaledb_catalog.continuous_aggs_bucket_function f
       JOIN _timescaledb_catalog.hypertable h ON h.id = f.mat_hypertable_id
      WHERE h.schema_name = $1 AND h.table_name = $2`,
    [m.schema, m.name],
  );
  const fn = rows[0];
  if (!fn?.plain) return null;
  const widthType = isTimeType(m.rawType) ? 'interval' : m.rawType;
  const { rows: bucket } = await target.query(
    `SELECT ${layout.api}.time_bucket($1::${widthType}, $2::${m.rawType})::text AS start`,
    [fn.bucket_width, value],
  );
  return (bucket[0]?.start as string | undefined) ?? null;
}

/**
 * Gives each target job the schedule state its source job has now (scheduled or paused) and its next start.
 * Jobs whose source job is gone are left paused and reported.
 */
export async function resumeJobsLikeSource(
  source: pg.Client,
  target: pg.Client,
  migrationId: string,
  layout: TimescaleLayout,
): Promise<{ resumed: number; paused: number; goneOnSource: number[] }> {
  const { rows: map } = await target.query(
    `SELECT source_job_id, target_job_id FROM ${J} WHERE migration_id = $1 ORDER BY source_job_id`,
    [migrationId],
  );
  if (map.length === 0) return { resumed: 0, paused: 0, goneOnSource: [] };
  // The next run too: a job the source would run tomorrow must not run on the target right after the cutover.
  const { rows: now } = await source.query(
    `SELECT j.id, j.scheduled, coalesce(s.next_start, j.initial_start)::text AS next_start
       FROM _timescaledb_config.bgw_job j LEFT JOIN _timescaledb_internal.bgw_job_stat s ON s.job_id = j.id
      WHERE j.id = ANY($1::int[])`,
    [map.map((m) => m.source_job_id)],
  );
  const scheduled = new Map(now.map((r) => [r.id as number, r.scheduled as boolean]));
  const nextStart = new Map(now.map((r) => [r.id as number, r.next_start as string | null]));
  let resumed = 0;
  let paused = 0;
  const goneOnSource: number[] = [];
  for (const m of map) {
    const state = scheduled.get(m.source_job_id);
    if (state === undefined) {
      goneOnSource.push(m.source_job_id);
      continue;
    }
    const next = nextStart.get(m.source_job_id) ?? null;
    await target.query(
      next === null
        ? `SELECT ${layout.api}.alter_job($1, scheduled => $2)`
        : `SELECT ${layout.api}.alter_job($1, scheduled => $2, next_start => $3::timestamptz)`,
      next === null ? [m.target_job_id, state] : [m.target_job_id, state, next],
    );
    if (state) resumed += 1;
    else paused += 1;
  }
  return { resumed, paused, goneOnSource };
}

/** The pg_dump exclusions for TimescaleDB: its chunk schemas and the views of continuous aggregates. */
export function dumpExclusions(layout: TimescaleLayout | null): {
  schemas: string[];
  tables: QualifiedName[];
} {
  if (!layout) return { schemas: [], tables: [] };
  return {
    // TimescaleDB's own schemas go whole; chunks in a user schema one by one (the schema holds user tables).
    schemas: [...new Set(['_timescaledb_internal', ...layout.chunkSchemas])].filter((s) =>
      s.startsWith('_timescaledb_'),
    ),
    tables: [...layout.continuousAggregates, ...layout.chunksInUserSchemas],
  };
}

/** A chunk created on the source after the snapshot and added to the full publication by the replay. */
export interface LateChunk extends QualifiedName {
  hypertable: QualifiedName;
}

/**
 * Routes the replay's relations on a TimescaleDB source: a chunk of a migrated hypertable to that
 * hypertable, the hypertable itself to itself (without ONLY), TimescaleDB's internal tables (compressed
 * data, materializations, statistics) to nothing. A chunk of a keyed hypertable that is not yet in the full
 * publication (created during the migration) is added to it, so its updates and deletes are published from
 * then on; `onLateChunk` reports it (updates and deletes before that point are checked at cutover).
 */
export function createChunkRouter(args: {
  source: pg.Client;
  layout: TimescaleLayout;
  fullPublication: string;
  onLateChunk: (chunk: LateChunk) => Promise<void>;
}): (
  rel: QualifiedName,
) => Promise<(QualifiedName & { via: 'hypertable' | 'chunk'; chunk?: QualifiedName }) | null | undefined> {
  const hypertables = new Map(args.layout.hypertables.map((h) => [tableKey(h), h]));
  const byId = new Map(args.layout.hypertables.map((h) => [h.id, h]));
  const internalSchemas = new Set(['_timescaledb_internal', ...args.layout.chunkSchemas]);
  const cache = new Map<string, (QualifiedName & { via: 'chunk'; chunk: QualifiedName }) | null>();
  return async (rel) => {
    const hypertable = hypertables.get(tableKey(rel));
    if (hypertable) return { schema: hypertable.schema, name: hypertable.name, via: 'hypertable' };
    if (!internalSchemas.has(rel.schema)) return undefined;
    const cached = cache.get(tableKey(rel));
    if (cached !== undefined) return cached;
    const { rows } = await args.source.query(
      `SELECT h.id, c.oid::regclass::text AS chunk,
              (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                 AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))) AS keyed,
              EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                       WHERE p.pubname = $3 AND pr.prrelid = c.oid) AS published
         FROM _timescaledb_catalog.chunk ch
         JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
         LEFT JOIN pg_namespace n ON n.nspname = ch.schema_name
         LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ch.table_name
        WHERE ch.schema_name = $1 AND ch.table_name = $2`,
      [rel.schema, rel.name, args.fullPublication],
    );
    const row = rows[0];
    // A chunk dropped since: its name still tells its hypertable (_hyper_<hypertable id>_<chunk id>_chunk).
    const named = /^_hyper_(\d+)_\d+_chunk$/.exec(rel.name);
    // Neither in the catalog nor named like a chunk: a user table in a schema that also holds chunks.
    if (!row && !named) return undefined;
    const id = row?.id ?? Number(named?.[1] ?? Number.NaN);
    const owner = byId.get(id);
    const route = owner
      ? {
          schema: owner.schema,
          name: owner.name,
          via: 'chunk' as const,
          chunk: { schema: rel.schema, name: rel.name },
        }
      : null;
    if (owner && row?.chunk && row.keyed && !row.published) {
      // Recorded first: a crash in between leaves a recorded chunk to publish, never a published one unrecorded.
      await args.onLateChunk({ schema: rel.schema, name: rel.name, hypertable: owner });
      await args.source.query(`ALTER PUBLICATION ${quoteIdent(args.fullPublication)} ADD TABLE ${row.chunk}`);
    }
    cache.set(tableKey(rel), route);
    return route;
  };
}

export interface ChunkCopy {
  chunk: QualifiedName;
  hypertable: QualifiedName;
  /** Non-generated columns, in the source's order. */
  columns: string[];
}

/**
 * Copies chunks again from the source as it is now: in one target transaction per chunk, the rows of the
 * chunk's range are deleted from the hypertable and the chunk's rows (compressed ones included) copied in.
 * For changes logical decoding cannot carry (DML on compressed batches, updates before a new chunk was
 * published); run with writes stopped, e.g. under the cutover's fence. Returns the rows copied per chunk.
 */
export async function recopyChunks(
  source: pg.Client,
  target: pg.Client,
  chunks: ChunkCopy[],
): Promise<number[]> {
  if (chunks.length === 0) return [];
  const predicates = new Map(
    (
      await readChunks(source, [
        ...new Map(chunks.map((c) => [quoteQualified(c.hypertable), c.hypertable])).values(),
      ])
    ).map((c) => [quoteQualified(c), c.predicate]),
  );
  const copied: number[] = [];
  for (const item of chunks) {
    const predicate = predicates.get(quoteQualified(item.chunk));
    if (predicate === undefined)
      throw new Error(`chunk ${quoteQualified(item.chunk)} no longer exists on the source`);
    const columns = item.columns.map(quoteIdent).join(', ');
    await target.query('BEGIN');
    try {
      await withoutTriggers(target, item.hypertable);
      await target.query(`DELETE FROM ${quoteQualified(item.hypertable)} WHERE ${predicate}`);
      const reader = source.query(
        copyTo(`COPY (SELECT ${columns} FROM ${quoteQualified(item.chunk)}) TO STDOUT`),
      );
      const writer = target.query(
        copyFrom(`COPY ${quoteQualified(item.hypertable)} (${columns}) FROM STDIN`),
      );
      await pipeline(reader, writer);
      await target.query('COMMIT');
      copied.push(writer.rowCount);
    } catch (error) {
      await target.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }
  return copied;
}

/**
 * Without a publication of the chunk schemas (no superuser on the source), chunks created during the
 * migration are found in TimescaleDB's catalog and added to the publications here: a keyed hypertable's to
 * the full one, a keyless one's to the insert-only one. Their rows written before that are not published, so
 * each is recorded to be copied again at cutover (and its changes meanwhile applied idempotently).
 */
export async function publishNewChunks(args: {
  source: pg.Client;
  layout: TimescaleLayout;
  publications: { full: string; insertOnly: string };
  /** Called for each chunk before it is published (to record it; see createChunkRouter). */
  beforePublish: (chunk: LateChunk) => Promise<void>;
}): Promise<LateChunk[]> {
  if (args.layout.hypertables.length === 0) return [];
  const { rows } = await args.source.query(
    `SELECT ch.schema_name::text AS schema, ch.table_name::text AS name, c.oid::regclass::text AS chunk,
            h.schema_name::text AS ht_schema, h.table_name::text AS ht_name,
            (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
               AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))) AS keyed
       FROM _timescaledb_catalog.chunk ch
       JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
       JOIN pg_namespace n ON n.nspname = ch.schema_name
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ch.table_name
      WHERE ch.hypertable_id = ANY($1::int[]) AND NOT ch.osm_chunk
        AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                         WHERE p.pubname = ANY($2::text[]) AND pr.prrelid = c.oid)
      ORDER BY ch.id`,
    [args.layout.hypertables.map((h) => h.id), [args.publications.full, args.publications.insertOnly]],
  );
  const added: LateChunk[] = [];
  for (const r of rows) {
    const chunk = { schema: r.schema, name: r.name, hypertable: { schema: r.ht_schema, name: r.ht_name } };
    await args.beforePublish(chunk);
    const publication = r.keyed ? args.publications.full : args.publications.insertOnly;
    await args.source.query(`ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${r.chunk}`);
    added.push(chunk);
  }
  return added;
}

/** Records late chunks on the target; `recopy`: its first rows were not published (copied again at cutover). */
export async function recordLateChunks(
  target: pg.Client,
  migrationId: string,
  chunks: readonly LateChunk[],
  recopy: boolean,
): Promise<void> {
  for (const chunk of chunks) {
    await target.query(
      `INSERT INTO ${quoteIdent(CONTROL_SCHEMA)}.ts_late_chunk
              (migration_id, chunk_schema, chunk_name, hypertable_schema, hypertable_name, recopy)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
      [migrationId, chunk.schema, chunk.name, chunk.hypertable.schema, chunk.hypertable.name, recopy],
    );
  }
}

/**
 * In the caller's transaction: foreign keys and triggers must not act on the rows a re-copy deletes and
 * writes (an ON DELETE CASCADE elsewhere would delete rows the copy never brings back). With the right to
 * set session_replication_role that is it; without, a hypertable that foreign keys reference or that has
 * user triggers is refused rather than copied.
 */
async function withoutTriggers(target: pg.Client, hypertable: QualifiedName): Promise<void> {
  await target.query('SAVEPOINT plm_replica');
  try {
    await target.query('SET LOCAL session_replication_role = replica');
    return;
  } catch {
    await target.query('ROLLBACK TO SAVEPOINT plm_replica');
  }
  const { rows } = await target.query(
    `SELECT (SELECT count(*) FROM pg_constraint WHERE confrelid = $1::regclass AND contype = 'f')::int AS fks,
            (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
               AND tgname NOT LIKE 'ts\\_%')::int AS triggers`,
    [quoteQualified(hypertable)],
  );
  if (rows[0]?.fks > 0 || rows[0]?.triggers > 0) {
    throw new MigrationError(
      'PERMISSION_DENIED',
      `Copying chunks of ${quoteQualified(hypertable)} again needs session_replication_role = replica on the target: ${rows[0].fks} foreign keys reference it and it has ${rows[0].triggers} user triggers, which would act on the rows deleted and written.`,
      'Run the cutover (or validate --repair) as a target user allowed to set session_replication_role (a superuser, or on PostgreSQL 15+ one granted SET on it), then run it again.',
    );
  }
}

/** Late chunks recorded with `recopy`: their changes are applied idempotently until the cutover copies them. */
export async function readRecopyChunks(target: pg.Client, migrationId: string): Promise<QualifiedName[]> {
  const { rows } = await target.query(
    `SELECT chunk_schema AS schema, chunk_name AS name FROM ${quoteIdent(CONTROL_SCHEMA)}.ts_late_chunk
      WHERE migration_id = $1 AND recopy`,
    [migrationId],
  );
  return rows;
}

/** What recopyChunks needs for these chunks (those that are chunks): hypertable and columns, from the source. */
export async function chunkCopies(
  source: pg.Client,
  schemas: string[] | null,
  chunks: readonly QualifiedName[],
): Promise<ChunkCopy[]> {
  const wanted = new Set(chunks.map((c) => `${c.schema}.${c.name}`));
  return (await listTables(source, schemas)).flatMap((t) =>
    t.chunkOf && wanted.has(`${t.schema}.${t.name}`)
      ? [{ chunk: { schema: t.schema, name: t.name }, hypertable: t.chunkOf, columns: t.columns }]
      : [],
  );
}

/**
 * The chunks created on the source during the migration (see createChunkRouter and publishNewChunks);
 * `recopy`: published only after their first rows.
 */
export async function readLateChunks(
  target: pg.Client,
  migrationId: string,
): Promise<(QualifiedName & { hypertable: QualifiedName; recopy: boolean })[]> {
  const { rows } = await target.query(
    `SELECT chunk_schema, chunk_name, hypertable_schema, hypertable_name, recopy FROM ${quoteIdent(CONTROL_SCHEMA)}.ts_late_chunk
      WHERE migration_id = $1 ORDER BY chunk_schema, chunk_name`,
    [migrationId],
  );
  return rows.map((r) => ({
    schema: r.chunk_schema,
    name: r.chunk_name,
    hypertable: { schema: r.hypertable_schema, name: r.hypertable_name },
    recopy: r.recopy,
  }));
}

/** PostgreSQL to TimescaleDB (`--hypertable`): a plain source table made a hypertable on the target. */
export interface HypertableRequest extends QualifiedName {
  timeColumn: string;
  chunkInterval: string | null;
}

/**
 * Refuses `--hypertable` requests TimescaleDB would reject, before anything is copied: the table and column
 * must exist on the source with a time or integer type, and every primary key and unique index must include
 * the column (TimescaleDB refuses the index otherwise, which would only show after the copy). Returns the
 * schema of the target's TimescaleDB API, installing the extension there (in public) when it is not yet.
 */
export async function prepareHypertableRequests(
  source: pg.Client,
  target: pg.Client,
  requests: readonly HypertableRequest[],
): Promise<PreparedHypertables> {
  const problems: string[] = [];
  const columnTypes = new Map<string, string>();
  for (const r of requests) {
    const { rows } = await source.query(
      `SELECT format_type(a.atttypid, NULL) AS type, c.relkind,
              array(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
                     WHERE i.indrelid = c.oid AND (i.indisunique OR i.indisprimary) AND NOT a.attnum = ANY(i.indkey)) AS blocking
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = $1 AND c.relname = $2`,
      [r.schema, r.name, r.timeColumn],
    );
    const row = rows[0];
    const table = quoteQualified(r);
    if (row?.type) columnTypes.set(table, row.type);
    if (row?.relkind !== 'r') problems.push(`${table} is not a plain table of the source`);
    else if (!row.type) problems.push(`${table} has no column ${quoteIdent(r.timeColumn)}`);
    else if (!isTimeType(row.type) && !['smallint', 'integer', 'bigint'].includes(row.type))
      problems.push(`${table}.${quoteIdent(r.timeColumn)} is ${row.type}, not a time or integer type`);
    else if (row.blocking.length > 0)
      problems.push(
        `${table} has a primary key or unique index without ${quoteIdent(r.timeColumn)} (${row.blocking.join('; ')}), which a hypertable cannot have`,
      );
  }
  const { rows: ext } = await target.query(
    `SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`,
  );
  const { rows: available } = await target.query(
    `SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`,
  );
  if (ext.length === 0 && available.length === 0)
    problems.push('the target server does not have TimescaleDB');
  if (problems.length > 0) {
    throw new MigrationError(
      'HYPERTABLE_NOT_POSSIBLE',
      `--hypertable cannot be honoured: ${problems.join('; ')}.`,
      'Fix the table on the source (a primary key must include the time column: ALTER TABLE … ADD PRIMARY KEY (id, <time column>)) or on the target server (install TimescaleDB and preload it), or leave the table out of --hypertable. Nothing was copied.',
    );
  }
  if (ext.length > 0) return { api: quoteIdent(ext[0].schema), columnTypes };
  await target.query('CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public');
  return { api: quoteIdent('public'), columnTypes };
}

export interface PreparedHypertables {
  /** The target's TimescaleDB API schema, quoted. */
  api: string;
  /** The time column's type per table (quoted qualified name). */
  columnTypes: Map<string, string>;
}

/** create_hypertable for each request (in the pre-data transaction, on the still empty tables). */
export function buildRequestedHypertableSql(
  prepared: PreparedHypertables,
  requests: readonly HypertableRequest[],
): string {
  return requests
    .map((r) => {
      const type = prepared.columnTypes.get(quoteQualified(r)) ?? 'timestamp with time zone';
      // by_range takes the interval in the column's terms: an interval for time types, the integer type otherwise.
      const interval =
        r.chunkInterval === null
          ? ''
          : `, ${quoteLiteral(r.chunkInterval)}::${isTimeType(type) ? 'interval' : type}`;
      return `SELECT ${prepared.api}.create_hypertable(${quoteLiteral(quoteQualified(r))}, ${prepared.api}.by_range(${quoteLiteral(r.timeColumn)}${interval}), create_default_indexes => false);`;
    })
    .join('\n');
}

/** The hypertables of a database (schema\u0000name), empty without TimescaleDB. */
export async function readHypertableNames(client: pg.Client): Promise<Set<string>> {
  const { rows: present } = await client.query(
    `SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL AS ts`,
  );
  if (!present[0]?.ts) return new Set();
  const { rows } = await client.query(
    `SELECT schema_name::text AS schema, table_name::text AS name FROM _timescaledb_catalog.hypertable`,
  );
  return new Set(rows.map((r) => tableKey(r)));
}

/** Where a chunk's rows go on the target, and (compressed on the source) in which order they are compressed. */
export interface ChunkTarget {
  hypertable: QualifiedName;
  compressOrder?: string;
}

/**
 * The chunks among `tables` with their target: the hypertable, and for a chunk compressed on the source (as
 * `client`'s transaction sees it) the ORDER BY of its compression settings, segment-by columns first.
 */
export async function readChunkTargets(
  client: pg.Client,
  tables: readonly (QualifiedName & { chunkOf?: QualifiedName })[],
  layout: TimescaleLayout | null,
): Promise<Map<string, ChunkTarget>> {
  const out = new Map<string, ChunkTarget>();
  const compressed = new Set(
    layout ? (await readChunks(client, layout.hypertables)).filter((c) => c.compressed).map(tableKey) : [],
  );
  const orderOf = new Map(
    (layout?.hypertables ?? []).flatMap((h) => {
      const parts = [h.compression?.segmentBy, h.compression?.orderBy].filter((p): p is string => Boolean(p));
      return parts.length ? [[tableKey(h), parts.join(', ')] as const] : [];
    }),
  );
  for (const t of tables) {
    if (!t.chunkOf) continue;
    const order = compressed.has(tableKey(t)) ? orderOf.get(tableKey(t.chunkOf)) : undefined;
    out.set(tableKey(t), { hypertable: t.chunkOf, ...(order ? { compressOrder: order } : {}) });
  }
  return out;
}

/**
 * The earliest time each hypertable's replayed changes touched, so the cutover refreshes continuous
 * aggregates only from there (the copy refreshed them up to its end). Values are the source's text forms
 * (ISO dates and times in UTC, which order as text for years 1000 to 9999) or integers. `null` = everything
 * (a TRUNCATE). Written in the transaction of the changes it covers, so a restart never loses a bound.
 */
export class TouchedRanges {
  private readonly columns = new Map<string, { column: string; integer: boolean }>();
  private readonly min = new Map<string, string | null>();
  private dirty = new Set<string>();

  constructor(layout: TimescaleLayout) {
    for (const h of layout.hypertables) {
      const d = h.dimensions[0];
      if (d?.kind === 'range')
        this.columns.set(tableKey(h), {
          column: d.column,
          integer: !isTimeType(d.columnType),
        });
    }
  }

  /** Loads what earlier runs recorded. */
  async load(client: pg.Client, migrationId: string): Promise<void> {
    const { rows } = await client.query(
      `SELECT hypertable_schema, hypertable_name, min_value FROM ${quoteIdent(CONTROL_SCHEMA)}.ts_touched WHERE migration_id = $1`,
      [migrationId],
    );
    for (const r of rows)
      this.min.set(tableKey({ schema: r.hypertable_schema, name: r.hypertable_name }), r.min_value);
  }

  /** Notes one replayed change (only changes routed to a hypertable count). */
  note(change: Change): void {
    if (change.kind === 'truncate') {
      for (const rel of change.rels) if (rel.via === 'hypertable') this.lower(tableKey(rel), null);
      return;
    }
    if (!change.rel.via) return;
    const key = tableKey(change.rel);
    const dim = this.columns.get(key);
    if (!dim) return;
    const rows =
      change.kind === 'insert'
        ? [change.values]
        : change.kind === 'update'
          ? [change.values, change.key, change.old]
          : [change.key, change.old];
    for (const row of rows) {
      const value = row?.[dim.column];
      if (typeof value === 'string') this.lower(key, value, dim.integer);
    }
  }

  private lower(key: string, value: string | null, integer = false): void {
    if (this.min.has(key)) {
      const current = this.min.get(key) ?? null;
      if (current === null) return;
      if (value !== null && (integer ? BigInt(value) >= BigInt(current) : value >= current)) return;
    }
    this.min.set(key, value);
    this.dirty.add(key);
  }

  /** Lowers a hypertable's bound to `value` (e.g. the start of a chunk copied again at cutover). */
  lowerTo(hypertable: QualifiedName, value: string | null, integer = false): void {
    this.lower(tableKey(hypertable), value, integer);
  }

  /** The earliest value touched: undefined = nothing, null = everything. */
  bound(key: string): string | null | undefined {
    return this.min.has(key) ? (this.min.get(key) ?? null) : undefined;
  }

  /** Whether the hypertable's first dimension is an integer. */
  isInteger(hypertable: QualifiedName): boolean {
    return this.columns.get(tableKey(hypertable))?.integer ?? false;
  }

  /** Writes the bounds that moved (in the caller's open transaction). */
  async save(client: pg.Client, migrationId: string): Promise<void> {
    if (this.dirty.size === 0) return;
    for (const key of this.dirty) {
      const [schema, name] = key.split('\u0000');
      await client.query(
        `INSERT INTO ${quoteIdent(CONTROL_SCHEMA)}.ts_touched (migration_id, hypertable_schema, hypertable_name, min_value)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (migration_id, hypertable_schema, hypertable_name) DO UPDATE SET min_value = EXCLUDED.min_value`,
        [migrationId, schema, name, this.min.get(key) ?? null],
      );
    }
    this.dirty = new Set();
  }
}

/** Where these chunks begin on their first dimension (text as the replay sees values: UTC, or an integer). */
export async function chunkRangeStarts(
  source: pg.Client,
  chunks: readonly QualifiedName[],
): Promise<{ hypertable: QualifiedName; start: string }[]> {
  if (chunks.length === 0) return [];
  await source.query(`SELECT set_config('TimeZone', 'UTC', false)`);
  const { rows } = await source.query(
    `SELECT c.hypertable_schema::text AS schema, c.hypertable_name::text AS name,
            coalesce(c.range_start::text, c.range_start_integer::text) AS start
       FROM timescaledb_information.chunks c
       JOIN unnest($1::text[], $2::text[]) AS want(schema, name) ON want.schema = c.chunk_schema AND want.name = c.chunk_name
      WHERE coalesce(c.range_start::text, c.range_start_integer::text) IS NOT NULL`,
    [chunks.map((c) => c.schema), chunks.map((c) => c.name)],
  );
  return rows.map((r) => ({ hypertable: { schema: r.schema, name: r.name }, start: r.start }));
}
