// Preflight for TimescaleDB: the facts read from TimescaleDB's catalog views on both sides, and the pure
// checks that turn them into findings (versions, preloading, hypertables, compression, continuous
// aggregates, jobs). This release migrates no hypertable as a hypertable, so a source that has one fails.
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
 * The finding that blocks a migration of a source with hypertables (or whose TimescaleDB catalog could
 * not be read). Part of the snapshot guard: `snapshot`, `copy` and `migrate` refuse such a source too.
 */
export function checkTimescaleSupported(ts: SourceTimescaleFacts | null): Finding[] {
  if (!ts) return [];
  if (ts.unreadable !== null) {
    return [
      {
        code: 'TIMESCALEDB_NOT_SUPPORTED_YET',
        severity: 'error',
        message: `TimescaleDB ${ts.version} is installed on the source, but its catalog views (timescaledb_information.*) could not be read: ${ts.unreadable}. pg-live-migrate cannot tell whether the schemas to migrate hold hypertables, which this release does not migrate.`,
        fix: `Upgrade TimescaleDB on the source to 2.x (ALTER EXTENSION timescaledb UPDATE;) or grant the source user read access to the timescaledb_information views, then run preflight again.`,
        objects: [TIMESCALEDB],
      },
    ];
  }
  if (ts.hypertables.length === 0 && ts.continuousAggregates.length === 0) return [];
  const names = [...ts.hypertables, ...ts.continuousAggregates].map(displayName);
  const caggs = ts.continuousAggregates.length;
  const chunks = ts.hypertables.reduce((n, h) => n + h.chunks, 0);
  const what = [
    plural(ts.hypertables.length, 'hypertable'),
    ...(caggs ? [plural(caggs, 'continuous aggregate')] : []),
  ].join(' and ');
  return [
    {
      code: 'TIMESCALEDB_NOT_SUPPORTED_YET',
      severity: 'error',
      message: `The source has ${what} in the schemas to migrate (TimescaleDB ${ts.version}, ${plural(chunks, 'chunk')}): ${listNames(names)}. This release does not migrate hypertables as hypertables: it would copy each chunk as a separate plain table, leave the hypertables empty and unknown to TimescaleDB on the target, lose the rows of compressed chunks, turn continuous aggregates into views that are never refreshed and drop the jobs; chunks created during the migration would be in no publication.`,
      fix: `Leave the schemas with hypertables out (--schema for the others), or migrate this database with pg_dump and pg_restore around timescaledb_pre_restore() and timescaledb_post_restore() (with downtime) until a later release of pg-live-migrate migrates hypertables.`,
      objects: names,
    },
  ];
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
      message: `${plural(keyless.length, 'hypertable')} ${keyless.length === 1 ? 'has' : 'have'} no primary key or replica identity: ${listNames(keyless.map(displayName))}. Their chunks have none either, so UPDATE and DELETE on them cannot be replicated (logical decoding cannot identify the old row).`,
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
      message: `Compression is in use on ${plural(compressed.length, 'hypertable')}: ${listNames(compressed.map(settings))}. The rows of a compressed chunk live in TimescaleDB's internal compressed tables, not in the chunk; changes to compressed chunks (INSERT, UPDATE, DELETE, compression and recompression) are not decoded as row changes of the hypertable. This release does not migrate them (see TIMESCALEDB_NOT_SUPPORTED_YET); the planned treatment is to copy compressed chunks through their hypertable and compress them again on the target with the same settings, and to re-copy chunks changed while compressed.`,
      fix: 'Nothing to change on the source; during a migration avoid writing into compressed chunks.',
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
      severity: 'warning',
      message: `${plural(caggs.length, 'continuous aggregate')}: ${listNames(caggs.map(describe))}. Their materialized rows live in internal hypertables; a plain copy would make each a view over a table that is never refreshed. This release does not migrate them (see TIMESCALEDB_NOT_SUPPORTED_YET); the planned treatment is to create them on the target with the same definition and refresh them at cutover.`,
      fix: 'Nothing to change on the source.',
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
      message: `${plural(jobs.length, 'background job')} (${running.length} scheduled): ${listNames(jobs.map(describeJob))}. On the source they keep running during a migration: a retention policy drops chunks and a compression policy rewrites them, which logical replication does not carry. This release restores no job on the target (see TIMESCALEDB_NOT_SUPPORTED_YET where hypertables are concerned); the planned treatment is to create them on the target paused and to resume them at cutover as they are scheduled on the source.`,
      fix: `Keep a record of the jobs (SELECT * FROM timescaledb_information.jobs WHERE job_id >= 1000;) and recreate the user jobs on the target after the cutover (add_job); pause a job during a migration with SELECT alter_job(<job_id>, scheduled => false);.`,
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
