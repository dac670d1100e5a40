// Preflight for TimescaleDB: the facts read from TimescaleDB's catalog views on both sides, and the pure
// checks that turn them into findings (versions, preloading, hypertables, compression, continuous
// aggregates, jobs).
import type { Finding } from './preflight';
import { displayName, type QualifiedName, quoteLiteral, quoteQualified } from './sql';

export const TIMESCALEDB = 'timescaledb';

export interface HypertableFact extends QualifiedName {
  /** The time (first) dimension's column. */
  timeColumn: string;
  chunks: number;
  compressedChunks: number;
  compressionEnabled: boolean;
  /** Primary key, REPLICA IDENTITY USING INDEX or FULL: its UPDATE/DELETE can be decoded. */
  hasReplicaIdentity: boolean;
  /** timescaledb_information.compression_settings: segment-by columns, order-by as `col [DESC]`. */
  segmentBy: string[];
  orderBy: string[];
}

export interface ContinuousAggregateFact extends QualifiedName {
  hypertable: QualifiedName;
  materializedOnly: boolean;
  compressionEnabled: boolean;
}

export interface JobFact {
  id: number;
  /** The procedure the job calls, e.g. _timescaledb_functions.policy_retention or public.my_job. */
  proc: QualifiedName;
  /** The hypertable or continuous aggregate it works on, if any. */
  relation: QualifiedName | null;
  scheduled: boolean;
  /** schedule_interval as the server prints it, e.g. "1 day". */
  schedule: string;
}

/** TimescaleDB in the source database: null when the extension is not installed there. */
export interface SourceTimescaleFacts {
  version: string;
  /** The catalog views could not be read (e.g. TimescaleDB 1.x, whose views have other names). */
  unreadable: string | null;
  /** In the schemas to migrate. */
  hypertables: HypertableFact[];
  continuousAggregates: ContinuousAggregateFact[];
  /** User jobs and policies (job_id >= 1000; TimescaleDB's own telemetry and history jobs are left out). */
  jobs: JobFact[];
  /** Schemas that hold chunks (associated_schema_name of the hypertables). */
  chunkSchemas: string[];
  /** timescaledb.enable_compression_wal_markers; null when the setting does not exist. */
  compressionMarkers: boolean | null;
  /** Chunks tiered to object storage (Timescale's OSM): foreign tables whose rows are elsewhere. */
  tieredChunks: number;
  /**
   * Every relation TimescaleDB manages (hypertables, internal materialization and compression hypertables,
   * chunks): the generic table findings leave them to the TimescaleDB findings.
   */
  managedRelations: QualifiedName[];
}

export interface TargetTimescaleFacts {
  /** Installed in the target database. */
  installedVersion: string | null;
  /** pg_available_extensions.default_version: what the schema restore's CREATE EXTENSION installs. */
  defaultVersion: string | null;
  /** pg_available_extension_versions: what CREATE EXTENSION … VERSION can install. */
  availableVersions: string[];
  /** timescaledb is in shared_preload_libraries (CREATE EXTENSION refuses otherwise). */
  preloaded: boolean;
}

/** The CLI flag that accepts different TimescaleDB versions on source and target. */
export const ALLOW_VERSION_MISMATCH_FLAG = '--allow-timescaledb-version-mismatch';

const MAX_LISTED = 10;

/** Parses shared_preload_libraries ("'pg_stat_statements', timescaledb") and looks for timescaledb. */
export function isTimescalePreloaded(sharedPreloadLibraries: string): boolean {
  return sharedPreloadLibraries
    .split(',')
    .map((entry) =>
      entry
        .trim()
        .replace(/^"(.*)"$/, '$1')
        .replace(/^'(.*)'$/, '$1'),
    )
    .some((entry) => /(^|\/)timescaledb(\.so|\.dll|\.dylib)?$/.test(entry));
}

/**
 * The findings about what a migration of hypertables needs from the source. Part of the snapshot guard:
 * `snapshot`, `copy` and `migrate` refuse a source with one of its errors too.
 */
export function checkTimescaleSupported(ts: SourceTimescaleFacts | null, superuser: boolean): Finding[] {
  if (!ts) return [];
  if (ts.unreadable !== null) {
    return [
      {
        code: 'TIMESCALEDB_NOT_SUPPORTED_YET',
        severity: 'error',
        message: `TimescaleDB ${ts.version} is installed on the source, but its catalog views (timescaledb_information.*) could not be read: ${ts.unreadable}. pg-live-migrate cannot tell which hypertables, continuous aggregates and jobs the schemas to migrate hold.`,
        fix: `Upgrade TimescaleDB on the source to 2.x (ALTER EXTENSION timescaledb UPDATE;) or grant the source user read access to TimescaleDB's catalog, then run preflight again.`,
        objects: [TIMESCALEDB],
      },
    ];
  }
  if (ts.hypertables.length === 0) return [];
  const out: Finding[] = [];
  const names = ts.hypertables.map(displayName);
  if (!superuser) {
    out.push({
      code: 'TIMESCALEDB_NOT_SUPERUSER',
      severity: 'warning',
      message: `The source has ${plural(ts.hypertables.length, 'hypertable')} (${listNames(names)}) and the source user is not a superuser, so no publication FOR TABLES IN SCHEMA ${ts.chunkSchemas.join(', ')} can catch the chunks TimescaleDB creates during the migration from their first row. The replay adds each new chunk to the publications when it finds it in TimescaleDB's catalog (every --lag-interval); the rows written to it before are copied again at cutover, with the writers stopped: the downtime grows with what is written into new chunks during the migration.`,
      fix: 'To avoid the copy at cutover, connect to the source as a superuser. Otherwise nothing to do; keep the migration short or plan the cutover for a quiet time.',
      objects: names,
    });
  }
  if (ts.tieredChunks > 0) {
    out.push({
      code: 'TIMESCALEDB_TIERED_DATA',
      severity: 'error',
      message: `${plural(ts.tieredChunks, 'chunk')} of the hypertables to migrate ${ts.tieredChunks === 1 ? 'is' : 'are'} tiered to object storage. Their rows are not in the database, so neither the copy nor the replay would carry them: the target would silently lack them.`,
      fix: "Bring the tiered chunks back before migrating (CALL untier_chunk('<chunk>'); for each, see timescaledb_osm.tiered_chunks), or leave those hypertables out with --schema and move the tiered data with Timescale's tooling.",
      objects: [TIMESCALEDB],
    });
  }
  const compressed = ts.hypertables.filter((h) => h.compressionEnabled || h.compressedChunks > 0);
  if (compressed.length > 0 && ts.compressionMarkers !== true) {
    out.push({
      code: 'TIMESCALEDB_COMPRESSION_MARKERS_OFF',
      severity: 'error',
      message: `Compression is in use (${listNames(compressed.map(displayName))}) but timescaledb.enable_compression_wal_markers is ${ts.compressionMarkers === false ? 'off' : 'unknown'} on the source. Without its markers, compressing or decompressing a chunk is decoded as deletes and inserts of its rows: the replay would delete or duplicate rows on the target.`,
      fix: 'On the source: ALTER SYSTEM SET timescaledb.enable_compression_wal_markers = on; SELECT pg_reload_conf(); (it only adds two small logical messages per compression).',
      objects: [TIMESCALEDB],
    });
  }
  return out;
}

/** Every TimescaleDB finding except the blocking one (checkTimescaleSupported). */
export function checkTimescale(
  source: SourceTimescaleFacts | null,
  target: TargetTimescaleFacts | undefined,
  options: { allowVersionMismatch: boolean },
): Finding[] {
  const out: Finding[] = [];
  if (target) out.push(...checkVersions(source, target, options));
  if (source && source.unreadable === null) {
    out.push(...checkReplicaIdentity(source));
    out.push(...checkCompression(source));
    out.push(...checkContinuousAggregates(source));
    out.push(...checkJobs(source));
  }
  return out;
}

// --- versions on both sides -------------------------------------------------------------------------

function describeTarget(t: TargetTimescaleFacts): string {
  const preload = `${t.preloaded ? '' : 'not '}in shared_preload_libraries`;
  if (t.installedVersion) return `${t.installedVersion} installed in the target database, ${preload}`;
  if (t.defaultVersion)
    return `not installed in the target database, available versions ${t.availableVersions.join(', ') || t.defaultVersion} (default ${t.defaultVersion}), ${preload}`;
  return 'not available on the target server';
}

function checkVersions(
  source: SourceTimescaleFacts | null,
  t: TargetTimescaleFacts,
  options: { allowVersionMismatch: boolean },
): Finding[] {
  if (!source) {
    if (!t.installedVersion) return [];
    return [
      {
        code: 'TIMESCALEDB_ONLY_ON_TARGET',
        severity: 'info',
        message: `TimescaleDB ${t.installedVersion} is installed in the target database but not in the source's: the source's tables are migrated as plain tables. Converting them into hypertables during the migration is not supported yet.`,
        fix: `Nothing to do for the migration. After the cutover, a table can become a hypertable with SELECT create_hypertable('<table>', by_range('<time column>'), migrate_data => true); (it locks and rewrites the table).`,
        objects: [TIMESCALEDB],
      },
    ];
  }
  const out: Finding[] = [];
  const version = source.version;
  out.push({
    code: 'TIMESCALEDB_VERSIONS',
    severity: 'info',
    message: `TimescaleDB ${version} on the source; on the target: ${describeTarget(t)}.`,
    fix: 'Nothing to do.',
    objects: [TIMESCALEDB],
  });
  if (!t.installedVersion && !t.defaultVersion) {
    out.push({
      code: 'TIMESCALEDB_MISSING_ON_TARGET',
      severity: 'error',
      message: `TimescaleDB ${version} is installed in the source database, but the target server does not have TimescaleDB (pg_available_extensions does not list it): the schema restore's CREATE EXTENSION timescaledb fails.`,
      fix: `Install TimescaleDB ${version} for the target's PostgreSQL (the timescaledb package of that version, or a TimescaleDB service), add timescaledb to shared_preload_libraries and restart the target.`,
      objects: [TIMESCALEDB],
    });
    return out;
  }
  if (!t.preloaded) {
    out.push({
      code: 'TIMESCALEDB_NOT_PRELOADED_ON_TARGET',
      severity: 'error',
      message: `TimescaleDB is available on the target but not in its shared_preload_libraries: CREATE EXTENSION timescaledb fails with "extension "timescaledb" must be preloaded".`,
      fix: `On the target: ALTER SYSTEM SET shared_preload_libraries = 'timescaledb'; (keep any libraries already listed, comma-separated) and restart it.`,
      objects: [TIMESCALEDB],
    });
  }
  // What the target runs: the installed version, else the default version the restore would install.
  const targetVersion = t.installedVersion ?? t.defaultVersion;
  if (targetVersion !== null && targetVersion !== version) {
    const sourceInstallable = t.availableVersions.includes(version);
    const sameVersion = sourceInstallable
      ? t.installedVersion
        ? `On the (still empty) target database: DROP EXTENSION timescaledb; CREATE EXTENSION timescaledb VERSION ${quoteLiteral(version)}; (connect with psql -X).`
        : `Install the source's version on the target before the migration: CREATE EXTENSION timescaledb VERSION ${quoteLiteral(version)}; in the target database (connect with psql -X).`
      : `Install TimescaleDB ${version} on the target server, or update the source to the target's version (ALTER EXTENSION timescaledb UPDATE TO ${quoteLiteral(targetVersion)}; on the source, after installing that version there).`;
    out.push({
      code: 'TIMESCALEDB_VERSION_MISMATCH',
      severity: options.allowVersionMismatch ? 'warning' : 'error',
      message: `TimescaleDB ${version} on the source, ${targetVersion} on the target (${t.installedVersion ? 'installed' : 'the version the schema restore would install'}). TimescaleDB's catalog and internal objects differ between versions, so a cross-version migration is only safe where TimescaleDB supports it${options.allowVersionMismatch ? `; accepted with ${ALLOW_VERSION_MISMATCH_FLAG}` : ''}.`,
      fix: options.allowVersionMismatch
        ? `Accepted with ${ALLOW_VERSION_MISMATCH_FLAG}. To avoid it: ${sameVersion}`
        : `${sameVersion} Or accept the difference with ${ALLOW_VERSION_MISMATCH_FLAG}.`,
      objects: [TIMESCALEDB],
    });
  }
  return out;
}

// --- what the source uses ---------------------------------------------------------------------------

function checkReplicaIdentity(ts: SourceTimescaleFacts): Finding[] {
  const keyless = ts.hypertables.filter((h) => !h.hasReplicaIdentity);
  if (keyless.length === 0) return [];
  return [
    {
      code: 'TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY',
      severity: 'warning',
      message: `${plural(keyless.length, 'hypertable')} ${keyless.length === 1 ? 'has' : 'have'} no primary key or replica identity: ${listNames(keyless.map(displayName))}. Their chunks have none either, so UPDATE and DELETE on them cannot be replicated (logical decoding cannot identify the old row); their inserts are. The cutover compares every chunk and copies the ones that differ again, with the writers stopped: the downtime grows with the size of those chunks.`,
      fix: `${keyless
        .slice(0, MAX_LISTED)
        .map((h) => `ALTER TABLE ${quoteQualified(h)} REPLICA IDENTITY FULL;`)
        .join(
          '\n',
        )}${keyless.length > MAX_LISTED ? '\n(… and the same for the other hypertables)' : ''}\n(TimescaleDB applies it to existing and new chunks; or add a primary key, which must include the time column: ALTER TABLE … ADD PRIMARY KEY (…, <time column>))`,
      objects: keyless.map(displayName),
    },
  ];
}

function checkCompression(ts: SourceTimescaleFacts): Finding[] {
  const compressed = ts.hypertables.filter((h) => h.compressionEnabled || h.compressedChunks > 0);
  if (compressed.length === 0) return [];
  const settings = (h: HypertableFact) => {
    const parts = [
      ...(h.segmentBy.length ? [`segmentby ${h.segmentBy.join(', ')}`] : []),
      ...(h.orderBy.length ? [`orderby ${h.orderBy.join(', ')}`] : []),
    ];
    return `${displayName(h)} (${h.compressedChunks} of ${plural(h.chunks, 'chunk')} compressed${h.compressionEnabled ? '' : ', compression since disabled'}${parts.length ? `; ${parts.join('; ')}` : ''})`;
  };
  return [
    {
      code: 'TIMESCALEDB_COMPRESSION',
      severity: 'warning',
      message: `Compression is in use on ${plural(compressed.length, 'hypertable')}: ${listNames(compressed.map(settings))}. Compressed chunks are copied through a query (decompressed on the way) into the target's hypertable, which gets the same compression settings, and compressed again there. During the replay, TimescaleDB's compression markers let compressing and decompressing pass as no change; inserts and updates into compressed chunks replicate. Deletes of whole compressed batches (timescaledb.enable_compressed_direct_batch_delete) and direct inserts into compressed form are not decoded: the cutover finds the chunks that differ and copies them again, with the writers stopped.`,
      fix: 'Nothing to change. To keep the cutover short, avoid deleting whole compressed batches during the migration (or SET timescaledb.enable_compressed_direct_batch_delete = off for the sessions that do).',
      objects: compressed.map(displayName),
    },
  ];
}

function checkContinuousAggregates(ts: SourceTimescaleFacts): Finding[] {
  const caggs = ts.continuousAggregates;
  if (caggs.length === 0) return [];
  const describe = (c: ContinuousAggregateFact) =>
    `${displayName(c)} on ${displayName(c.hypertable)}${c.materializedOnly ? '' : ' (real-time)'}${c.compressionEnabled ? ' (compressed)' : ''}`;
  return [
    {
      code: 'TIMESCALEDB_CONTINUOUS_AGGREGATES',
      severity: 'info',
      message: `${plural(caggs.length, 'continuous aggregate')}: ${listNames(caggs.map(describe))}. They are created on the target with the same definition after the copy, with their materialized rows copied, and refreshed at cutover from the earliest raw row on; older buckets (whose raw data retention dropped) keep the copied rows.`,
      fix: 'Nothing to change.',
      objects: caggs.map(displayName),
    },
  ];
}

const POLICIES: Record<string, string> = {
  policy_retention: 'retention',
  policy_compression: 'compression',
  policy_recompression: 'recompression',
  policy_refresh_continuous_aggregate: 'continuous aggregate refresh',
  policy_reorder: 'reorder',
};

/** A job as the finding names it: "retention policy on public.events (every 1 day)" or "user job public.f (…)". */
export function describeJob(job: JobFact): string {
  const internal = job.proc.schema.startsWith('_timescaledb_');
  const kind = internal
    ? `${POLICIES[job.proc.name] ?? job.proc.name.replace(/^policy_/, '')} policy`
    : `user job ${displayName(job.proc)}`;
  const on = job.relation ? ` on ${displayName(job.relation)}` : '';
  return `${kind}${on} (job ${job.id}, schedule_interval ${job.schedule}${job.scheduled ? '' : ', paused'})`;
}

function checkJobs(ts: SourceTimescaleFacts): Finding[] {
  const jobs = ts.jobs;
  if (jobs.length === 0) return [];
  const running = jobs.filter((j) => j.scheduled);
  return [
    {
      code: 'TIMESCALEDB_JOBS',
      severity: running.length > 0 ? 'warning' : 'info',
      message: `${plural(jobs.length, 'background job')} (${running.length} scheduled): ${listNames(jobs.map(describeJob))}. They are created on the target after the copy, paused (policies through add_*_policy, user jobs through add_job, each with the source's config and schedule), and at cutover each gets the state its source job has then (scheduled or paused). On the source they keep running: chunks a retention policy drops there are dropped on the target at cutover, and compression is carried by TimescaleDB's markers.`,
      fix: 'Nothing to do. A job created on the source during the migration is not carried over: create it on the target after the cutover.',
      objects: jobs.map((j) => String(j.id)),
    },
  ];
}

// --- text helpers (the same as preflight.ts's, which imports this module) ----------------------------

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function listNames(names: string[]): string {
  if (names.length <= MAX_LISTED) return names.join(', ');
  return `${names.slice(0, MAX_LISTED).join(', ')} … and ${names.length - MAX_LISTED} more`;
}
