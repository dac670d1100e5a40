// Reads what preflight judges, with read-only catalog queries: server settings, privileges and the tables
// to migrate on the source (plus a two-point sample of its WAL position), emptiness and extensions on the
// target, TimescaleDB on both, and the client tools' versions. A query that fails is recorded as skipped
// (or, for the source's TimescaleDB catalog, as unreadable), never thrown.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import type {
  ProbeName,
  ServerFacts,
  SkippedCheck,
  SourceFacts,
  SourceTableFact,
  TargetFacts,
  ToolFact,
  ToolName,
} from '../../core/preflight';
import {
  isTimescalePreloaded,
  type SourceTimescaleFacts,
  type TargetTimescaleFacts,
  TIMESCALEDB,
} from '../../core/preflight-timescaledb';
import type { QualifiedName } from '../../core/sql';
import { readMigration } from './control-schema';
import { readToolMajor, type ToolContext, toolExists, toolPath } from './pg-tools';
import { listPublications, publicationNameFor, slotNameFor } from './replication-slot';
import { EXCLUDED_SCHEMAS, listTables, timescaleCatalog } from './source-catalog';

// Same scope as source-catalog's listTables: user schemas, or those named with --schema.
const SCHEMA_FILTER = `n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_%'
  AND ($2::text[] IS NULL OR n.nspname = ANY($2::text[]))`;
const NOT_EXTENSION_MEMBER = `NOT EXISTS (SELECT 1 FROM pg_depend d
  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

/** Session settings for the preflight's own connections: it must change nothing and wait on no one for long. */
export const READ_ONLY_SESSION = `SET default_transaction_read_only = on; SET statement_timeout = '60s'; SET lock_timeout = '10s'`;

function probeRunner(skipped: SkippedCheck[]) {
  return async <T>(check: ProbeName, fallback: T, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      skipped.push({ check, message: error instanceof Error ? error.message : String(error) });
      return fallback;
    }
  };
}

async function readServerBasics(
  client: pg.Client,
  display: string,
  skipped: SkippedCheck[],
): Promise<ServerFacts> {
  // to_jsonb(d) reads the locale-provider columns whatever this version calls them (daticulocale in
  // 15-16, datlocale in 17+) and yields null where they do not exist.
  const { rows } = await client.query(
    `SELECT current_setting('server_version_num')::int AS version_num, current_setting('server_version') AS version,
            current_database() AS database, current_user AS "user",
            pg_encoding_to_char(d.encoding) AS encoding, d.datcollate::text AS collate, d.datctype::text AS ctype,
            to_jsonb(d) ->> 'datlocprovider' AS provider,
            coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') AS icu_locale
       FROM pg_database d WHERE d.datname = current_database()`,
  );
  const r = rows[0];
  return {
    display,
    database: r.database,
    user: r.user,
    versionNum: Number(r.version_num),
    version: String(r.version).split(' ')[0] ?? String(r.version),
    encoding: r.encoding,
    collate: r.collate,
    ctype: r.ctype,
    localeProvider: r.provider ?? null,
    icuLocale: r.icu_locale ?? null,
    skipped,
  };
}

export interface SourceFactOptions {
  migrationId: string;
  schemas: string[] | null;
  /** How long to sample the WAL position for the rate (0 = do not measure WAL). */
  walSampleMs: number;
}

/** Everything the source checks need. Throws only when the server's basic settings cannot be read. */
export async function readSourceFacts(
  client: pg.Client,
  display: string,
  options: SourceFactOptions,
): Promise<SourceFacts> {
  const skipped: SkippedCheck[] = [];
  const probe = probeRunner(skipped);
  const basics = await readServerBasics(client, display, skipped);
  const names = {
    slot: slotNameFor(options.migrationId),
    publication: publicationNameFor(options.migrationId, 'full'),
    insertOnlyPublication: publicationNameFor(options.migrationId, 'insert_only'),
  };
  // Before 10 there is nothing to migrate from (no pgoutput): the version finding is the whole story.
  if (basics.versionNum < 100000) return { ...basics, ...unknownSourceFacts(), names };
  const { rows: settingRows } = await client.query(
    `SELECT pg_is_in_recovery() AS in_recovery, r.rolsuper AS superuser, r.rolreplication AS replication,
            has_database_privilege(current_database(), 'CREATE') AS can_create,
            current_setting('wal_level') AS wal_level,
            current_setting('max_replication_slots')::int AS max_slots,
            current_setting('max_wal_senders')::int AS max_senders,
            (SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep_mb,
            (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
            (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'walsender') AS used_senders
       FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const settings = settingRows[0];
  if (!settings) throw new Error(`the role ${basics.user} is not in pg_roles`);
  const inRecovery: boolean = settings.in_recovery;
  // The current WAL position; a standby reports how far it has replayed instead.
  const lsnFunction = inRecovery ? 'pg_last_wal_replay_lsn()' : 'pg_current_wal_lsn()';
  const sampleStart =
    options.walSampleMs > 0
      ? await probe('wal-rate', undefined, async () => {
          const { rows } = await client.query(`SELECT ${lsnFunction}::text AS lsn`);
          return { lsn: rows[0]?.lsn as string | null, at: performance.now() };
        })
      : undefined;

  const params = [EXCLUDED_SCHEMAS, options.schemas];
  const rdsReplicationMember = await probe('replication-role', null, async () => {
    const { rows } = await client.query(`SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication'`);
    if (rows.length === 0) return null;
    const member = await client.query(`SELECT pg_has_role('rds_replication', 'MEMBER') AS member`);
    return member.rows[0]?.member === true;
  });
  const schemas = await probe('schemas', [], async () => {
    const { rows } = await client.query(
      `SELECT n.nspname AS name, has_schema_privilege(n.oid, 'USAGE') AS usage
         FROM pg_namespace n
        WHERE ${SCHEMA_FILTER}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
        ORDER BY 1`,
      params,
    );
    return rows.map((r) => ({ name: r.name as string, usage: r.usage as boolean }));
  });
  const tableProbe = await probe('tables', { tables: [], sequences: [] }, async () => {
    const tables = await listTables(client, options.schemas);
    // pg_has_role(owner, 'USAGE') is what CREATE PUBLICATION's ownership check asks: the user's own
    // privileges include the owner's (true for superusers).
    const { rows } = await client.query(
      `SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind, pg_get_userbyid(c.relowner) AS owner,
              pg_has_role(c.relowner, 'USAGE') AS owned, has_table_privilege(c.oid, 'SELECT') AS can_select
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f', 'S') AND c.relpersistence <> 't' AND ${SCHEMA_FILTER} AND ${NOT_EXTENSION_MEMBER}
        ORDER BY 1, 2`,
      params,
    );
    const access = new Map(rows.map((r) => [`${r.schema}\u0000${r.name}`, r]));
    const withAccess = tables.map((t): SourceTableFact => {
      const a = access.get(`${t.schema}\u0000${t.name}`);
      return { ...t, owner: a?.owner ?? '', owned: a?.owned ?? false, canSelect: a?.can_select ?? false };
    });
    const sequences: QualifiedName[] = rows
      .filter((r) => r.kind === 'S' && !r.can_select)
      .map((r) => ({ schema: r.schema, name: r.name }));
    return { tables: withAccess, sequences };
  });
  const extensions = await probe('extensions', [], async () => {
    const { rows } = await client.query(
      'SELECT extname AS name, extversion AS version FROM pg_extension ORDER BY 1',
    );
    return rows as { name: string; version: string }[];
  });
  const largeObjects = await probe('large-objects', 0, async () => {
    const { rows } = await client.query('SELECT count(*)::bigint AS n FROM pg_largeobject_metadata');
    return Number(rows[0]?.n ?? 0);
  });
  const tablespaces = await probe('tablespaces', [], async () => {
    // reltablespace 0 is the database's default tablespace, which pg_dump never names.
    const { rows } = await client.query(
      `SELECT t.spcname AS tablespace, n.nspname AS schema, c.relname AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_tablespace t ON t.oid = c.reltablespace
        WHERE c.reltablespace <> 0 AND c.relkind IN ('r', 'p', 'm', 'i', 'I') AND c.relpersistence <> 't'
          AND ${SCHEMA_FILTER} AND ${NOT_EXTENSION_MEMBER}
        ORDER BY 1, 2, 3`,
      params,
    );
    const bySpace = new Map<string, QualifiedName[]>();
    for (const r of rows) {
      const list = bySpace.get(r.tablespace) ?? [];
      list.push({ schema: r.schema, name: r.name });
      bySpace.set(r.tablespace, list);
    }
    return [...bySpace].map(([name, relations]) => ({ name, relations }));
  });
  const slot = await probe('slot', null, async () => {
    const { rows } = await client.query('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1', [
      names.slot,
    ]);
    return rows[0] ? { activePid: (rows[0].active_pid as number | null) ?? null } : null;
  });
  const publications = await probe('publications', [], () => listPublications(client, options.migrationId));
  const timescaleVersion = extensions.find((e) => e.name === TIMESCALEDB)?.version;
  const timescaledb = timescaleVersion
    ? await readSourceTimescale(client, timescaleVersion, options.schemas)
    : null;
  const walStats =
    options.walSampleMs > 0 && basics.versionNum >= 140000
      ? await probe('wal-rate', null, async () => {
          const { rows } = await client.query(
            `SELECT wal_bytes::float8 AS bytes, extract(epoch FROM now() - stats_reset)::float8 AS seconds FROM pg_stat_wal`,
          );
          const r = rows[0];
          return r && r.seconds !== null ? { bytes: Number(r.bytes), seconds: Number(r.seconds) } : null;
        })
      : null;
  let walSample: SourceFacts['walSample'] = null;
  if (sampleStart?.lsn) {
    const startLsn = sampleStart.lsn;
    const wait = options.walSampleMs - (performance.now() - sampleStart.at);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    walSample = await probe('wal-rate', null, async () => {
      const { rows } = await client.query(
        `SELECT pg_wal_lsn_diff(${lsnFunction}, $1::pg_lsn)::float8 AS bytes`,
        [startLsn],
      );
      return {
        bytes: Math.max(0, Number(rows[0]?.bytes ?? 0)),
        seconds: (performance.now() - sampleStart.at) / 1000,
      };
    });
  }
  return {
    ...basics,
    inRecovery,
    walLevel: settings.wal_level,
    maxReplicationSlots: settings.max_slots,
    usedReplicationSlots: settings.used_slots,
    maxWalSenders: settings.max_senders,
    usedWalSenders: settings.used_senders,
    isSuperuser: settings.superuser,
    hasReplicationAttribute: settings.replication,
    rdsReplicationMember,
    canCreateInDatabase: settings.can_create,
    schemas,
    tables: tableProbe.tables,
    sequencesWithoutSelect: tableProbe.sequences,
    extensions,
    largeObjects,
    tablespaces,
    maxSlotWalKeepSizeMb: settings.keep_mb == null ? null : Number(settings.keep_mb),
    walSample,
    walStats,
    names,
    slot,
    publications,
    timescaledb,
  };
}

function unknownSourceFacts(): Omit<SourceFacts, keyof ServerFacts | 'names'> {
  return {
    inRecovery: false,
    walLevel: 'unknown',
    maxReplicationSlots: 0,
    usedReplicationSlots: 0,
    maxWalSenders: 0,
    usedWalSenders: 0,
    isSuperuser: false,
    hasReplicationAttribute: false,
    rdsReplicationMember: null,
    canCreateInDatabase: false,
    schemas: [],
    tables: [],
    sequencesWithoutSelect: [],
    extensions: [],
    largeObjects: 0,
    tablespaces: [],
    maxSlotWalKeepSizeMb: null,
    walSample: null,
    walStats: null,
    slot: null,
    publications: [],
    timescaledb: null,
  };
}

/** Everything the target checks need. Throws only when the server's basic settings cannot be read. */
export async function readTargetFacts(
  client: pg.Client,
  display: string,
  options: { migrationId: string; schemas: string[] | null },
): Promise<TargetFacts> {
  const skipped: SkippedCheck[] = [];
  const probe = probeRunner(skipped);
  const basics = await readServerBasics(client, display, skipped);
  const userTables = await probe('target-tables', { names: [] as QualifiedName[], count: 0 }, async () => {
    // The same tables copy's assertTargetEmpty refuses to start over.
    const { rows } = await client.query(
      `SELECT n.nspname AS schema, c.relname AS name, count(*) OVER () AS total
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND ${SCHEMA_FILTER} AND ${NOT_EXTENSION_MEMBER}
        ORDER BY 1, 2 LIMIT 10`,
      [EXCLUDED_SCHEMAS, options.schemas],
    );
    return {
      names: rows.map((r) => ({ schema: r.schema as string, name: r.name as string })),
      count: Number(rows[0]?.total ?? 0),
    };
  });
  const migration = await probe('migration-record', null, async () => {
    const row = await readMigration(client, options.migrationId);
    return row ? { phase: row.phase as string } : null;
  });
  const availableExtensions = await probe('available-extensions', [], async () => {
    const { rows } = await client.query('SELECT name FROM pg_available_extensions ORDER BY 1');
    return rows.map((r) => r.name as string);
  });
  const tablespaces = await probe('target-tablespaces', [], async () => {
    const { rows } = await client.query('SELECT spcname FROM pg_tablespace ORDER BY 1');
    return rows.map((r) => r.spcname as string);
  });
  const timescaledb = await probe('target-timescaledb', null, () => readTargetTimescale(client));
  return {
    ...basics,
    userTables: userTables.names,
    userTableCount: userTables.count,
    migration,
    availableExtensions,
    tablespaces,
    timescaledb,
  };
}

/**
 * TimescaleDB in the source database, from its catalog views (timescaledb_information.*). A failed read
 * is recorded in `unreadable`, not skipped: preflight must not pass a source whose hypertables it could
 * not see.
 */
async function readSourceTimescale(
  client: pg.Client,
  version: string,
  schemas: string[] | null,
): Promise<SourceTimescaleFacts> {
  const inScope = (column: string) => `($1::text[] IS NULL OR ${column} = ANY($1::text[]))`;
  try {
    if ((await timescaleCatalog(client)) === 'unknown') {
      throw new Error(
        `the layout of TimescaleDB ${version}'s catalog (_timescaledb_catalog) is not one this release reads (it was built against 2.28)`,
      );
    }
    // The identity test is the one listTables applies to plain tables; TimescaleDB copies the
    // hypertable's replica identity to its chunks.
    const hypertables = await client.query(
      `SELECT h.hypertable_schema::text AS schema, h.hypertable_name::text AS name,
              h.primary_dimension::text AS time_column, h.num_chunks::int AS chunks, h.compression_enabled,
              (SELECT count(*)::int FROM timescaledb_information.chunks k
                WHERE k.hypertable_schema = h.hypertable_schema AND k.hypertable_name = h.hypertable_name
                  AND k.is_compressed) AS compressed_chunks,
              c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS has_identity
         FROM timescaledb_information.hypertables h
         JOIN pg_namespace n ON n.nspname = h.hypertable_schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.hypertable_name
        WHERE ${inScope('h.hypertable_schema')}
        ORDER BY 1, 2`,
      [schemas],
    );
    const settings = await client.query(
      `SELECT hypertable_schema::text AS schema, hypertable_name::text AS name, attname::text AS column,
              segmentby_column_index AS segment_index, orderby_column_index AS order_index, orderby_asc
         FROM timescaledb_information.compression_settings
        ORDER BY 1, 2, segmentby_column_index, orderby_column_index`,
    );
    const caggs = await client.query(
      `SELECT view_schema::text AS schema, view_name::text AS name, hypertable_schema::text AS hypertable_schema,
              hypertable_name::text AS hypertable_name, materialized_only, compression_enabled
         FROM timescaledb_information.continuous_aggregates
        WHERE ${inScope('view_schema')}
        ORDER BY 1, 2`,
      [schemas],
    );
    // Jobs below 1000 are TimescaleDB's own (telemetry, job history retention), present in every database.
    const jobs = await client.query(
      `SELECT job_id::int AS id, proc_schema::text AS proc_schema, proc_name::text AS proc_name, scheduled,
              schedule_interval::text AS schedule, hypertable_schema::text AS relation_schema,
              hypertable_name::text AS relation_name
         FROM timescaledb_information.jobs
        WHERE job_id >= 1000 AND ${inScope('coalesce(hypertable_schema, proc_schema)')}
        ORDER BY 1`,
      [schemas],
    );
    // The information views hide the internal hypertables (materializations, compressed data) and
    // compressed chunks by design; the catalog lists every relation TimescaleDB manages.
    const managed = await client.query(
      `SELECT schema_name::text AS schema, table_name::text AS name FROM _timescaledb_catalog.hypertable
       UNION ALL SELECT schema_name::text, table_name::text FROM _timescaledb_catalog.chunk`,
    );
    const extra = await client.query(
      `SELECT array(SELECT DISTINCT associated_schema_name::text FROM _timescaledb_catalog.hypertable ORDER BY 1) AS schemas,
              current_setting('timescaledb.enable_compression_wal_markers', true) AS markers,
              (SELECT count(*)::int FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
                WHERE c.osm_chunk AND ($1::text[] IS NULL OR h.schema_name = ANY($1::text[]))) AS tiered`,
      [schemas],
    );
    const markers = extra.rows[0]?.markers as string | null;
    const key = (schema: string, name: string) => `${schema}\u0000${name}`;
    const compression = new Map<string, { segmentBy: string[]; orderBy: string[] }>();
    for (const r of settings.rows) {
      const entry = compression.get(key(r.schema, r.name)) ?? { segmentBy: [], orderBy: [] };
      if (r.segment_index !== null) entry.segmentBy.push(r.column);
      if (r.order_index !== null) entry.orderBy.push(`${r.column}${r.orderby_asc === false ? ' DESC' : ''}`);
      compression.set(key(r.schema, r.name), entry);
    }
    return {
      version,
      unreadable: null,
      hypertables: hypertables.rows.map((r) => ({
        schema: r.schema,
        name: r.name,
        timeColumn: r.time_column,
        chunks: Number(r.chunks),
        compressedChunks: Number(r.compressed_chunks),
        compressionEnabled: r.compression_enabled === true,
        hasReplicaIdentity: r.has_identity === true,
        segmentBy: compression.get(key(r.schema, r.name))?.segmentBy ?? [],
        orderBy: compression.get(key(r.schema, r.name))?.orderBy ?? [],
      })),
      continuousAggregates: caggs.rows.map((r) => ({
        schema: r.schema,
        name: r.name,
        hypertable: { schema: r.hypertable_schema, name: r.hypertable_name },
        materializedOnly: r.materialized_only === true,
        compressionEnabled: r.compression_enabled === true,
      })),
      jobs: jobs.rows.map((r) => ({
        id: Number(r.id),
        proc: { schema: r.proc_schema, name: r.proc_name },
        relation: r.relation_name ? { schema: r.relation_schema, name: r.relation_name } : null,
        scheduled: r.scheduled === true,
        schedule: r.schedule,
      })),
      managedRelations: managed.rows.map((r) => ({ schema: r.schema, name: r.name })),
      chunkSchemas: extra.rows[0]?.schemas?.length ? extra.rows[0].schemas : ['_timescaledb_internal'],
      compressionMarkers: markers === null || markers === '' ? null : markers === 'on',
      tieredChunks: Number(extra.rows[0]?.tiered ?? 0),
    };
  } catch (error) {
    return {
      version,
      unreadable: error instanceof Error ? error.message : String(error),
      hypertables: [],
      continuousAggregates: [],
      jobs: [],
      managedRelations: [],
      chunkSchemas: [],
      compressionMarkers: null,
      tieredChunks: 0,
    };
  }
}

/** TimescaleDB on the target: installed in its database, installable, and preloaded. */
async function readTargetTimescale(client: pg.Client): Promise<TargetTimescaleFacts> {
  const { rows } = await client.query(
    `SELECT (SELECT extversion FROM pg_extension WHERE extname = $1) AS installed,
            (SELECT default_version FROM pg_available_extensions WHERE name = $1) AS default_version,
            coalesce((SELECT array_agg(version::text ORDER BY version) FROM pg_available_extension_versions
                       WHERE name = $1), '{}') AS versions,
            current_setting('shared_preload_libraries') AS preload`,
    [TIMESCALEDB],
  );
  const r = rows[0];
  return {
    installedVersion: r?.installed ?? null,
    defaultVersion: r?.default_version ?? null,
    availableVersions: (r?.versions as string[] | undefined) ?? [],
    preloaded: isTimescalePreloaded(String(r?.preload ?? '')),
  };
}

/** pg_dump, pg_restore and pg_dumpall: where they are and their major versions. Never throws. */
export async function readToolFacts(ctx: ToolContext): Promise<ToolFact[]> {
  const tools: ToolName[] = ['pg_dump', 'pg_restore', 'pg_dumpall'];
  return Promise.all(
    tools.map(async (tool): Promise<ToolFact> => {
      const found = toolExists(ctx, tool);
      const path = ctx.binDir ? toolPath(ctx, tool) : (findOnPath(ctx.env, tool) ?? `${tool} on PATH`);
      if (!found) return { tool, path, found, major: null, error: null };
      try {
        return { tool, path, found, major: await readToolMajor(ctx, tool), error: null };
      } catch (error) {
        return {
          tool,
          path,
          found,
          major: null,
          error: error instanceof Error ? error.message : String(error),
        };
      }
    }),
  );
}

function findOnPath(env: NodeJS.ProcessEnv, tool: string): string | undefined {
  const dir = (env.PATH ?? '').split(':').find((d) => d && existsSync(join(d, tool)));
  return dir ? join(dir, tool) : undefined;
}
