// Preflight: the facts the adapter reads from both servers and this machine, and the pure checks that turn
// them into findings (stable code, severity, what was observed, the exact fix). FINDING_CODES documents
// every code; the README troubleshooting table is generated from it.
import type { ErrorCode } from './errors';
import { formatBytes, formatDuration } from './format';
import { isCopied, isReplicated, type TableInfo } from './plan';
import {
  checkTimescale,
  checkTimescaleSupported,
  type SourceTimescaleFacts,
  type TargetTimescaleFacts,
  TIMESCALEDB,
} from './preflight-timescaledb';
import { displayName, type QualifiedName, quoteIdent, quoteLiteral, quoteQualified } from './sql';

export type Severity = 'error' | 'warning' | 'info';

/** Every finding code with a one-line description. Codes are public API: never rename one. */
export const FINDING_CODES = {
  SOURCE_UNREACHABLE: 'The source server could not be reached (host, port, firewall, server down).',
  SOURCE_AUTH_FAILED: 'The source refused the user name or password.',
  SOURCE_DATABASE_NOT_FOUND: 'The database named in the source connection string does not exist.',
  SOURCE_CONNECTION_FAILED: 'Connecting to the source failed for another reason (TLS, server error).',
  TARGET_UNREACHABLE: 'The target server could not be reached (host, port, firewall, server down).',
  TARGET_AUTH_FAILED: 'The target refused the user name or password.',
  TARGET_DATABASE_NOT_FOUND: 'The database named in the target connection string does not exist.',
  TARGET_CONNECTION_FAILED: 'Connecting to the target failed for another reason (TLS, server error).',
  SERVER_VERSIONS: 'The PostgreSQL versions of source and target (for the record).',
  SOURCE_VERSION_UNSUPPORTED:
    'The source is older than PostgreSQL 10, which has no logical decoding with pgoutput.',
  TARGET_VERSION_OLDER: "The target's major version is older than the source's; the schema may not restore.",
  SOURCE_IS_STANDBY: 'The source is a standby; logical slots need the primary (or PostgreSQL 16+).',
  SOURCE_WAL_LEVEL_NOT_LOGICAL: "The source's wal_level is not 'logical', so no logical slot can be created.",
  SOURCE_NO_FREE_REPLICATION_SLOT: 'Every replication slot allowed by max_replication_slots is taken.',
  SOURCE_NO_FREE_WAL_SENDER: 'Every WAL sender allowed by max_wal_senders is busy.',
  SOURCE_CANNOT_REPLICATE: 'The source user may not create a replication slot (needs REPLICATION).',
  SOURCE_CANNOT_CREATE_PUBLICATION: 'The source user lacks CREATE on the database, needed for a publication.',
  SOURCE_TABLES_NOT_OWNED: 'The source user does not own tables it must add to the publication.',
  SOURCE_SELECT_DENIED: 'The source user lacks SELECT on tables or sequences to copy.',
  SOURCE_SCHEMA_USAGE_DENIED: 'The source user lacks USAGE on a schema to migrate.',
  SOURCE_SCHEMA_NOT_FOUND: 'A schema named with --schema does not exist on the source.',
  NOTHING_TO_COPY: 'The schemas to migrate contain no tables.',
  PG_TOOL_NOT_FOUND: 'pg_dump, pg_restore or pg_dumpall is not installed (or not in --pg-bindir).',
  PG_TOOL_TOO_OLD: "A client tool's major version is older than the source's (or pg_restore than pg_dump).",
  PG_TOOL_VERSION_UNKNOWN: 'A client tool did not report a version that can be read.',
  TARGET_NOT_EMPTY: 'The target already has user tables in the schemas to migrate.',
  MIGRATION_RESUMABLE: 'The target records this migration id: commands resume it.',
  SOURCE_SLOT_CONFLICT: "The migration's slot exists on the source, but the target does not record it.",
  SOURCE_PUBLICATION_CONFLICT: "The migration's publications exist, but the target does not record it.",
  TARGET_EXTENSION_UNAVAILABLE: 'An extension installed on the source is not available on the target.',
  TABLES_WITHOUT_REPLICA_IDENTITY:
    'Tables without primary key or replica identity: UPDATE/DELETE on them are not replicated.',
  UNLOGGED_TABLES: 'Unlogged tables are copied once; their later changes are not replicated.',
  FOREIGN_TABLES: 'Foreign tables are recreated without rows (their data lives elsewhere).',
  LARGE_OBJECTS: 'Large objects (pg_largeobject) are neither copied nor replicated.',
  TABLESPACE_MISSING_ON_TARGET:
    'Source relations use a tablespace the target lacks; the schema restore fails.',
  TABLESPACES_KEPT: 'Source relations use a non-default tablespace that the target has; they keep it.',
  SOURCE_WAL_KEEP_UNLIMITED: 'max_slot_wal_keep_size is unlimited: a lagging slot can fill the source disk.',
  SOURCE_WAL_KEEP_TOO_SMALL: 'max_slot_wal_keep_size is below the WAL the slot is estimated to retain.',
  SOURCE_WAL_RETENTION_ESTIMATE: 'Estimated WAL the slot retains during the copy (for the record).',
  ENCODING_MISMATCH: 'Source and target databases use different encodings.',
  COLLATION_MISMATCH: 'Source and target databases use different collations (text sorts differently).',
  PREFLIGHT_CHECK_SKIPPED: 'A check could not run (a catalog query failed); its condition is unknown.',
  TIMESCALEDB_NOT_SUPPORTED_YET:
    "The source's TimescaleDB catalog could not be read (e.g. TimescaleDB 1.x), so its hypertables are unknown.",
  TIMESCALEDB_NOT_SUPERUSER:
    'Hypertables and no superuser on the source: chunks created during the migration are copied again at cutover.',
  TIMESCALEDB_COMPRESSION_MARKERS_OFF:
    'Compression is in use but timescaledb.enable_compression_wal_markers is off on the source.',
  TIMESCALEDB_TIERED_DATA: 'Chunks tiered to object storage: their rows are not in the database to copy.',
  TIMESCALEDB_VERSIONS: 'The TimescaleDB versions of source and target (for the record).',
  TIMESCALEDB_MISSING_ON_TARGET: 'The source uses TimescaleDB; the target server does not have it.',
  TIMESCALEDB_NOT_PRELOADED_ON_TARGET:
    'The target has TimescaleDB but not in shared_preload_libraries, so CREATE EXTENSION fails.',
  TIMESCALEDB_VERSION_MISMATCH:
    'Source and target run different TimescaleDB versions (a warning with --allow-timescaledb-version-mismatch).',
  TIMESCALEDB_ONLY_ON_TARGET: 'The target has TimescaleDB and the source does not: tables stay plain tables.',
  TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY:
    'Hypertables without primary key or replica identity: their UPDATE/DELETE cannot be replicated.',
  TIMESCALEDB_COMPRESSION: 'Hypertables with compression (and how many chunks are compressed).',
  TIMESCALEDB_CONTINUOUS_AGGREGATES: 'Continuous aggregates on the source.',
  TIMESCALEDB_JOBS: 'TimescaleDB background jobs (policies and user jobs) on the source.',
} as const satisfies Record<string, string>;
export type FindingCode = keyof typeof FINDING_CODES;

export interface Finding {
  code: FindingCode;
  severity: Severity;
  /** What was observed (never a secret). */
  message: string;
  /** What to do: the SQL or setting to change. */
  fix: string;
  /** The objects concerned (tables, schemas, extensions …), complete even when the message abbreviates. */
  objects?: string[];
}

export interface PreflightReport {
  ok: boolean;
  migrationId: string;
  counts: Record<Severity, number>;
  /** Errors first, then warnings, then information; in check order within a severity. */
  findings: Finding[];
}

// ---------------------------------------------------------------------------------------------------
// Facts (gathered by src/adapters/postgres/preflight-facts.ts)

export interface ConnectionFailure {
  kind: 'unreachable' | 'auth' | 'database' | 'other';
  /** What the client saw, naming the server by its redacted connection string. */
  message: string;
  /** What to do, from the driver-error translation. */
  hint: string;
}

export type Probe<T> = { ok: true; facts: T } | { ok: false; failure: ConnectionFailure };

/** A check whose query failed: its facts hold empty defaults, so the finding says it was not checked. */
export interface SkippedCheck {
  check: ProbeName;
  message: string;
}

export type ProbeName =
  | 'schemas'
  | 'tables'
  | 'extensions'
  | 'large-objects'
  | 'tablespaces'
  | 'wal-rate'
  | 'slot'
  | 'publications'
  | 'replication-role'
  | 'target-tables'
  | 'migration-record'
  | 'available-extensions'
  | 'target-tablespaces'
  | 'target-timescaledb';

export interface ServerFacts {
  /** Redacted connection string. */
  display: string;
  database: string;
  user: string;
  /** server_version_num, e.g. 150004. */
  versionNum: number;
  /** server_version without the distribution suffix, e.g. "15.4". */
  version: string;
  encoding: string;
  collate: string;
  ctype: string;
  /** 'c' (libc), 'i' (ICU), 'b' (builtin); null before PostgreSQL 15. */
  localeProvider: string | null;
  icuLocale: string | null;
  skipped: SkippedCheck[];
}

export interface SourceTableFact extends TableInfo {
  owner: string;
  /** The user is the owner or has its privileges (what CREATE PUBLICATION … FOR TABLE checks). */
  owned: boolean;
  canSelect: boolean;
}

export interface SourceFacts extends ServerFacts {
  inRecovery: boolean;
  walLevel: string;
  maxReplicationSlots: number;
  usedReplicationSlots: number;
  maxWalSenders: number;
  usedWalSenders: number;
  isSuperuser: boolean;
  hasReplicationAttribute: boolean;
  /** Membership in rds_replication; null where that role does not exist (not RDS/Aurora). */
  rdsReplicationMember: boolean | null;
  canCreateInDatabase: boolean;
  /** The schemas in scope (all user schemas, or those named with --schema that exist). */
  schemas: { name: string; usage: boolean }[];
  tables: SourceTableFact[];
  sequencesWithoutSelect: QualifiedName[];
  extensions: { name: string; version: string }[];
  largeObjects: number;
  /** Non-default tablespaces used by tables, indexes and materialized views in scope. */
  tablespaces: { name: string; relations: QualifiedName[] }[];
  /** max_slot_wal_keep_size in MB: -1 = unlimited; null = no such setting (before PostgreSQL 13). */
  maxSlotWalKeepSizeMb: number | null;
  /** WAL written between two reads of the current WAL position. */
  walSample: { bytes: number; seconds: number } | null;
  /** pg_stat_wal totals since its last reset (PostgreSQL 14+). */
  walStats: { bytes: number; seconds: number } | null;
  /** The names this migration gives its slot and publications (src/adapters/postgres/replication-slot.ts). */
  names: { slot: string; publication: string; insertOnlyPublication: string };
  /** The migration's slot, when it exists. */
  slot: { activePid: number | null } | null;
  /** The migration's publications that exist. */
  publications: string[];
  /** TimescaleDB in the source database; null when it is not installed there. */
  timescaledb: SourceTimescaleFacts | null;
}

export interface TargetFacts extends ServerFacts {
  /** User tables in the schemas to migrate (the first few) and how many there are. */
  userTables: QualifiedName[];
  userTableCount: number;
  /** This migration's row in the target's control schema. */
  migration: { phase: string } | null;
  availableExtensions: string[];
  tablespaces: string[];
  /** TimescaleDB on the target server; null when it could not be read. */
  timescaledb: TargetTimescaleFacts | null;
}

export type ToolName = 'pg_dump' | 'pg_restore' | 'pg_dumpall';

export interface ToolFact {
  tool: ToolName;
  /** Where it was looked for or found. */
  path: string;
  found: boolean;
  major: number | null;
  /** Why the version could not be read. */
  error: string | null;
}

export interface PreflightFacts {
  migrationId: string;
  /** --schema values; null = every user schema. */
  schemas: string[] | null;
  source: Probe<SourceFacts>;
  target: Probe<TargetFacts>;
  tools: ToolFact[];
  /** --allow-timescaledb-version-mismatch: different TimescaleDB versions are a warning, not an error. */
  allowTimescaledbVersionMismatch?: boolean;
}

/** Copy rate assumed for the WAL retention estimate; stated in every message that uses it. */
export const ASSUMED_COPY_BYTES_PER_SECOND = 100 * 1024 * 1024;
const MAX_LISTED = 10;

// ---------------------------------------------------------------------------------------------------
// Checks

export function computeFindings(facts: PreflightFacts): Finding[] {
  const findings: Finding[] = [];
  const source = facts.source.ok ? facts.source.facts : undefined;
  const target = facts.target.ok ? facts.target.facts : undefined;
  if (!facts.source.ok) findings.push(connectionFinding('source', facts.source.failure));
  if (!facts.target.ok) findings.push(connectionFinding('target', facts.target.failure));
  const versions = versionsFinding(source, target, facts.tools);
  if (versions) findings.push(versions);

  const sourceUsable = source !== undefined && source.versionNum >= 100000;
  if (source && !sourceUsable) findings.push(...checkSourceVersion(source));
  if (source && sourceUsable) {
    findings.push(...computeSnapshotReadiness(source, facts.schemas));
    findings.push(...checkConflicts(facts.migrationId, source, facts.target));
    findings.push(...checkTables(source));
    findings.push(...checkWalRetention(source));
  }
  findings.push(...checkTools(facts.tools, source));
  if (target) findings.push(...checkTarget(facts, target));
  if (source && target && sourceUsable) findings.push(...checkCompatibility(source, target));
  if (source && sourceUsable) {
    findings.push(
      ...checkTimescale(source.timescaledb, target?.timescaledb ?? undefined, {
        allowVersionMismatch: facts.allowTimescaledbVersionMismatch === true,
      }),
    );
  }
  if (source) findings.push(...skippedFindings('source', source.skipped));
  if (target) findings.push(...skippedFindings('target', target.skipped));
  return findings;
}

export function buildPreflightReport(migrationId: string, findings: Finding[]): PreflightReport {
  const rank: Record<Severity, number> = { error: 0, warning: 1, info: 2 };
  const sorted = [...findings].sort((a, b) => rank[a.severity] - rank[b.severity]);
  const counts = { error: 0, warning: 0, info: 0 };
  for (const f of findings) counts[f.severity] += 1;
  return { ok: counts.error === 0, migrationId, counts, findings: sorted };
}

/**
 * What must hold on the source before a slot and publications are created: version, wal_level, free
 * slot and WAL sender, the replication and publication privileges, SELECT and USAGE. Also used by the
 * guard that `snapshot` and `copy` run before they create anything.
 */
export function computeSnapshotReadiness(source: SourceFacts, schemas: string[] | null): Finding[] {
  if (source.versionNum < 100000) return checkSourceVersion(source);
  return [
    ...checkReplicationSettings(source),
    ...checkPrivileges(source, schemas),
    ...checkTimescaleSupported(source.timescaledb, source.isSuperuser),
  ];
}

/** The MigrationError code a blocking finding maps to when `snapshot`/`copy` refuse to start. */
export function errorCodeForFinding(code: FindingCode): ErrorCode {
  const map: Partial<Record<FindingCode, ErrorCode>> = {
    SOURCE_WAL_LEVEL_NOT_LOGICAL: 'SOURCE_WAL_LEVEL_NOT_LOGICAL',
    SOURCE_VERSION_UNSUPPORTED: 'SOURCE_VERSION_UNSUPPORTED',
    SOURCE_NO_FREE_REPLICATION_SLOT: 'SOURCE_NO_FREE_REPLICATION_SLOT',
    SOURCE_NO_FREE_WAL_SENDER: 'SOURCE_NO_FREE_WAL_SENDER',
    SOURCE_CANNOT_REPLICATE: 'PERMISSION_DENIED',
    SOURCE_CANNOT_CREATE_PUBLICATION: 'PERMISSION_DENIED',
    SOURCE_TABLES_NOT_OWNED: 'PERMISSION_DENIED',
    SOURCE_SELECT_DENIED: 'PERMISSION_DENIED',
    SOURCE_SCHEMA_USAGE_DENIED: 'PERMISSION_DENIED',
    SOURCE_SLOT_CONFLICT: 'SLOT_ALREADY_EXISTS',
    TARGET_NOT_EMPTY: 'TARGET_NOT_EMPTY',
    PG_TOOL_NOT_FOUND: 'PG_TOOL_NOT_FOUND',
    PG_TOOL_TOO_OLD: 'PG_TOOL_TOO_OLD',
    TIMESCALEDB_NOT_SUPPORTED_YET: 'TIMESCALEDB_NOT_SUPPORTED_YET',
    TIMESCALEDB_COMPRESSION_MARKERS_OFF: 'TIMESCALEDB_COMPRESSION_MARKERS_OFF',
  };
  return map[code] ?? 'PREFLIGHT_FAILED';
}

// --- connectivity and versions ---------------------------------------------------------------------

function connectionFinding(role: 'source' | 'target', failure: ConnectionFailure): Finding {
  const suffix = {
    unreachable: 'UNREACHABLE',
    auth: 'AUTH_FAILED',
    database: 'DATABASE_NOT_FOUND',
    other: 'CONNECTION_FAILED',
  } as const;
  const code = `${role.toUpperCase()}_${suffix[failure.kind]}` as FindingCode;
  return { code, severity: 'error', message: failure.message, fix: failure.hint };
}

const majorOf = (versionNum: number) =>
  versionNum >= 100000 ? Math.floor(versionNum / 10000) : Math.floor(versionNum / 100) / 100;

function describeServer(s: ServerFacts): string {
  return `PostgreSQL ${s.version} (database ${quoteIdent(s.database)} as ${quoteIdent(s.user)})`;
}

function versionsFinding(
  source: SourceFacts | undefined,
  target: TargetFacts | undefined,
  tools: ToolFact[],
): Finding | undefined {
  if (!source && !target) return undefined;
  const found = tools.filter((t) => t.major !== null);
  const parts = [
    source ? `source ${describeServer(source)}` : 'source not reached',
    target ? `target ${describeServer(target)}` : 'target not reached',
    ...(found.length
      ? [`client tools ${found.map((t) => `${t.tool} ${t.major} (${t.path})`).join(', ')}`]
      : []),
  ];
  return {
    code: 'SERVER_VERSIONS',
    severity: 'info',
    message: `${parts.join('; ')}.`,
    fix: 'Nothing to do.',
  };
}

function checkSourceVersion(source: SourceFacts): Finding[] {
  if (source.versionNum >= 100000) return [];
  return [
    {
      code: 'SOURCE_VERSION_UNSUPPORTED',
      severity: 'error',
      message: `The source runs PostgreSQL ${source.version} (server_version_num ${source.versionNum}); live migration needs 10 or later (logical decoding with pgoutput).`,
      fix: 'Upgrade the source to PostgreSQL 10 or later first (pg_upgrade), or migrate with pg_dump/pg_restore and downtime.',
    },
  ];
}

// --- replication settings and privileges -----------------------------------------------------------

function checkReplicationSettings(s: SourceFacts): Finding[] {
  const out: Finding[] = [];
  const major = majorOf(s.versionNum);
  if (s.inRecovery) {
    out.push({
      code: 'SOURCE_IS_STANDBY',
      severity: major >= 16 ? 'warning' : 'error',
      message:
        major >= 16
          ? `The source (PostgreSQL ${s.version}) is a standby. Logical slots on a standby work from PostgreSQL 16 only with hot_standby_feedback = on and wal_level = logical on the primary, and the slot is lost on failover.`
          : `The source (PostgreSQL ${s.version}) is a standby; before PostgreSQL 16 logical replication slots can only be created on the primary.`,
      fix: 'Point --source at the primary server.',
    });
  }
  if (s.walLevel !== 'logical') {
    out.push({
      code: 'SOURCE_WAL_LEVEL_NOT_LOGICAL',
      severity: 'error',
      message: `Source wal_level is '${s.walLevel}'; live migration needs 'logical' to decode changes from its replication slot.`,
      fix: 'ALTER SYSTEM SET wal_level = logical; then restart the source server. On RDS/Aurora set rds.logical_replication = 1 in the parameter group and reboot.',
    });
  }
  // A slot of this migration that already exists (resume) needs no new one; a sender that already
  // streams it needs no new sender.
  const slotsNeeded = s.slot ? 0 : 1;
  const freeSlots = s.maxReplicationSlots - s.usedReplicationSlots;
  if (freeSlots < slotsNeeded) {
    out.push({
      code: 'SOURCE_NO_FREE_REPLICATION_SLOT',
      severity: 'error',
      message: `Source max_replication_slots = ${s.maxReplicationSlots} and ${s.usedReplicationSlots} slots exist: no free slot for the migration (it needs 1).`,
      fix: `Drop slots nobody uses (SELECT slot_name, active FROM pg_replication_slots; then SELECT pg_drop_replication_slot('<name>');), or ALTER SYSTEM SET max_replication_slots = ${s.usedReplicationSlots + slotsNeeded}; and restart the source.`,
    });
  }
  const sendersNeeded = s.slot?.activePid != null ? 0 : 1;
  const freeSenders = s.maxWalSenders - s.usedWalSenders;
  if (freeSenders < sendersNeeded) {
    out.push({
      code: 'SOURCE_NO_FREE_WAL_SENDER',
      severity: 'error',
      message: `Source max_wal_senders = ${s.maxWalSenders} and ${s.usedWalSenders} WAL senders are running: none is free for the replication connection that holds the snapshot during the copy (and streams changes afterwards).`,
      fix: `ALTER SYSTEM SET max_wal_senders = ${s.usedWalSenders + sendersNeeded}; then restart the source (or stop an unused replication client).`,
    });
  }
  if (!s.isSuperuser && !s.hasReplicationAttribute && s.rdsReplicationMember !== true) {
    out.push({
      code: 'SOURCE_CANNOT_REPLICATE',
      severity: 'error',
      message: `Source user ${quoteIdent(s.user)} is neither superuser nor has the REPLICATION attribute${s.rdsReplicationMember === false ? ' nor membership in rds_replication' : ''}, so it cannot create the replication slot.`,
      fix:
        s.rdsReplicationMember === false
          ? `GRANT rds_replication TO ${quoteIdent(s.user)};`
          : `ALTER ROLE ${quoteIdent(s.user)} WITH REPLICATION;`,
    });
  }
  return out;
}

function checkPrivileges(s: SourceFacts, schemas: string[] | null): Finding[] {
  const out: Finding[] = [];
  const ran = (check: ProbeName) => !s.skipped.some((k) => k.check === check);
  const user = quoteIdent(s.user);
  if (!s.isSuperuser && !s.canCreateInDatabase) {
    out.push({
      code: 'SOURCE_CANNOT_CREATE_PUBLICATION',
      severity: 'error',
      message: `Source user ${user} lacks CREATE on database ${quoteIdent(s.database)}; CREATE PUBLICATION needs it.`,
      fix: `GRANT CREATE ON DATABASE ${quoteIdent(s.database)} TO ${user};`,
    });
  }
  if (schemas && ran('schemas')) {
    const present = new Set(s.schemas.map((n) => n.name));
    const missing = schemas.filter((name) => !present.has(name));
    if (missing.length > 0) {
      out.push({
        code: 'SOURCE_SCHEMA_NOT_FOUND',
        severity: 'error',
        message: `--schema names ${missing.map(quoteIdent).join(', ')}, which the source database ${quoteIdent(s.database)} does not have.`,
        fix: 'Fix the --schema value (schema names are case-sensitive) or the database in --source.',
        objects: missing,
      });
    }
  }
  const noUsage = s.schemas.filter((n) => !n.usage).map((n) => n.name);
  if (noUsage.length > 0) {
    out.push({
      code: 'SOURCE_SCHEMA_USAGE_DENIED',
      severity: 'error',
      message: `Source user ${user} lacks USAGE on ${plural(noUsage.length, 'schema')} to migrate: ${listNames(noUsage.map((n) => quoteIdent(n)))}.`,
      fix: noUsage.map((n) => `GRANT USAGE ON SCHEMA ${quoteIdent(n)} TO ${user};`).join('\n'),
      objects: noUsage,
    });
  }
  if (!s.isSuperuser) {
    const replicated = s.tables.filter(isReplicated);
    const notOwned = replicated.filter((t) => !t.owned);
    if (notOwned.length > 0) {
      const owners = [...new Set(notOwned.map((t) => t.owner))].sort();
      out.push({
        code: 'SOURCE_TABLES_NOT_OWNED',
        severity: 'error',
        message: `CREATE PUBLICATION … FOR TABLE needs ownership of each table; source user ${user} does not own ${notOwned.length} of the ${replicated.length} tables to replicate: ${listNames(notOwned.map(displayName))} (owned by ${owners.map(quoteIdent).join(', ')}).`,
        fix: `${owners.map((o) => `GRANT ${quoteIdent(o)} TO ${user};`).join('\n')}\n(membership in the owning role counts as ownership; or connect as a superuser)`,
        objects: notOwned.map(displayName),
      });
    }
  }
  const unreadable = [
    ...s.tables.filter((t) => (t.kind === 'table' || t.kind === 'partitioned') && !t.canSelect),
    ...s.sequencesWithoutSelect,
  ];
  if (unreadable.length > 0) {
    const tables = unreadable.length - s.sequencesWithoutSelect.length;
    const what = [
      tables ? plural(tables, 'table') : '',
      s.sequencesWithoutSelect.length ? plural(s.sequencesWithoutSelect.length, 'sequence') : '',
    ]
      .filter(Boolean)
      .join(' and ');
    const bySchema = [...new Set(unreadable.map((t) => t.schema))].sort();
    out.push({
      code: 'SOURCE_SELECT_DENIED',
      severity: 'error',
      message: `Source user ${user} lacks SELECT on ${what} to copy: ${listNames(unreadable.map(displayName))}.`,
      fix:
        unreadable.length <= MAX_LISTED
          ? unreadable.map((t) => `GRANT SELECT ON ${quoteQualified(t)} TO ${user};`).join('\n')
          : bySchema
              .map(
                (n) =>
                  `GRANT SELECT ON ALL TABLES IN SCHEMA ${quoteIdent(n)} TO ${user};\nGRANT SELECT ON ALL SEQUENCES IN SCHEMA ${quoteIdent(n)} TO ${user};`,
              )
              .join('\n'),
      objects: unreadable.map(displayName),
    });
  }
  if (ran('tables') && s.tables.filter(isCopied).length === 0) {
    out.push({
      code: 'NOTHING_TO_COPY',
      severity: 'warning',
      message: `The source database ${quoteIdent(s.database)} has no tables in ${schemas ? `schemas ${schemas.map(quoteIdent).join(', ')}` : 'any user schema'}.`,
      fix: 'Check the database in --source and the --schema values.',
    });
  }
  return out;
}

// --- leftovers of this migration id -----------------------------------------------------------------

function checkConflicts(migrationId: string, s: SourceFacts, target: Probe<TargetFacts>): Finding[] {
  // A recorded migration makes the slot and publications ours: that is a resume (checkTarget says so).
  if (target.ok && target.facts.migration) return [];
  const out: Finding[] = [];
  const unknown = !target.ok;
  const why = unknown
    ? 'the target could not be read to tell whether this is a resume of that migration'
    : `the target records no migration '${migrationId}'`;
  const clean = `pg-live-migrate clean --migration-id ${migrationId}`;
  if (s.slot) {
    const slot = s.names.slot;
    out.push({
      code: 'SOURCE_SLOT_CONFLICT',
      severity: unknown ? 'warning' : 'error',
      message: `Replication slot '${slot}' already exists on the source (active pid: ${s.slot.activePid ?? 'none'}), but ${why}.`,
      fix: `If it is left over from an earlier attempt, run '${clean}' (or SELECT pg_drop_replication_slot(${quoteLiteral(slot)}); on the source). If another migration uses it, pick another --migration-id.`,
      objects: [slot],
    });
  }
  if (s.publications.length > 0) {
    out.push({
      code: 'SOURCE_PUBLICATION_CONFLICT',
      severity: unknown ? 'warning' : 'error',
      message: `Publication ${s.publications.map((p) => `'${p}'`).join(' and ')} already exist${s.publications.length === 1 ? 's' : ''} on the source, but ${why}.`,
      fix: `If left over from an earlier attempt, run '${clean}' (or ${s.publications.map((p) => `DROP PUBLICATION ${quoteIdent(p)};`).join(' ')} on the source). If another migration uses them, pick another --migration-id.`,
      objects: s.publications,
    });
  }
  return out;
}

// --- what is copied and replicated ------------------------------------------------------------------

function checkTables(s: SourceFacts): Finding[] {
  const out: Finding[] = [];
  // Hypertables and their chunks are TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY's.
  const managed = new Set((s.timescaledb?.managedRelations ?? []).map(displayName));
  const noIdentity = s.tables.filter(
    (t) => isReplicated(t) && !t.hasReplicaIdentity && !managed.has(displayName(t)),
  );
  if (noIdentity.length > 0) {
    out.push({
      code: 'TABLES_WITHOUT_REPLICA_IDENTITY',
      severity: 'warning',
      message: `${plural(noIdentity.length, 'table')} ${noIdentity.length === 1 ? 'has' : 'have'} no primary key or replica identity: ${listNames(noIdentity.map(displayName))}. They join the insert/truncate-only publication '${s.names.insertOnlyPublication}' so UPDATE and DELETE keep working on the source, but those UPDATEs and DELETEs are not replicated to the target.`,
      fix: `${noIdentity
        .slice(0, MAX_LISTED)
        .map((t) => `ALTER TABLE ${quoteQualified(t)} REPLICA IDENTITY FULL;`)
        .join(
          '\n',
        )}${noIdentity.length > MAX_LISTED ? '\n(… and the same for the other tables)' : ''}\n(or add a primary key: ALTER TABLE … ADD PRIMARY KEY (…); FULL logs whole old rows, which costs WAL on busy tables)`,
      objects: noIdentity.map(displayName),
    });
  }
  const unlogged = s.tables.filter((t) => isCopied(t) && t.unlogged);
  if (unlogged.length > 0) {
    out.push({
      code: 'UNLOGGED_TABLES',
      severity: 'warning',
      message: `${plural(unlogged.length, 'unlogged table')}: ${listNames(unlogged.map(displayName))}. Their rows are copied once at the snapshot; later changes write no WAL and are not replicated.`,
      fix: `${unlogged.map((t) => `ALTER TABLE ${quoteQualified(t)} SET LOGGED;`).join('\n')}\n(rewrites the table; or accept that it is copied only once)`,
      objects: unlogged.map(displayName),
    });
  }
  const foreign = s.tables.filter((t) => t.kind === 'foreign');
  if (foreign.length > 0) {
    out.push({
      code: 'FOREIGN_TABLES',
      severity: 'warning',
      message: `${plural(foreign.length, 'foreign table')}: ${listNames(foreign.map(displayName))}. Their definitions are recreated on the target but no rows are copied: the data lives on the remote server.`,
      fix: 'Make sure the target can reach the remote server (its foreign data wrapper, server and user mappings), or leave these tables out with --schema.',
      objects: foreign.map(displayName),
    });
  }
  if (s.largeObjects > 0) {
    out.push({
      code: 'LARGE_OBJECTS',
      severity: 'warning',
      message: `The source database has ${plural(s.largeObjects, 'large object')} (pg_largeobject_metadata); they are neither copied nor replicated (logical decoding does not carry them).`,
      fix: 'Move them separately while the source is read-only at cutover (pg_dump --data-only --large-objects, or lo_export/lo_import), or store them in bytea columns before migrating.',
    });
  }
  return out;
}

function checkWalRetention(s: SourceFacts): Finding[] {
  const copyBytes = s.tables.filter(isCopied).reduce((sum, t) => sum + t.bytes, 0);
  const copySeconds = copyBytes / ASSUMED_COPY_BYTES_PER_SECOND;
  const rates: { rate: number; basis: string }[] = [];
  if (s.walSample && s.walSample.seconds > 0)
    rates.push({
      rate: s.walSample.bytes / s.walSample.seconds,
      basis: `${formatBytes(s.walSample.bytes)} in a ${s.walSample.seconds.toFixed(1)} s sample`,
    });
  // A pg_stat_wal window shorter than a minute (just reset) says more about the reset than the rate.
  if (s.walStats && s.walStats.seconds >= 60)
    rates.push({
      rate: s.walStats.bytes / s.walStats.seconds,
      basis: `${formatBytes(s.walStats.bytes)} in ${formatDuration(s.walStats.seconds * 1000)} of pg_stat_wal`,
    });
  // The higher rate: a quiet second must not hide a busy day.
  const best = rates.sort((a, b) => b.rate - a.rate)[0];
  const retained = best ? best.rate * copySeconds : undefined;
  const estimate = best
    ? `The source writes ~${formatBytes(best.rate)}/s of WAL (${rates.map((r) => r.basis).join('; ')}); copying ${formatBytes(copyBytes)} of table data at an assumed ${formatBytes(ASSUMED_COPY_BYTES_PER_SECOND)}/s takes ~${formatDuration(copySeconds * 1000)}, so the slot retains ~${formatBytes(retained ?? 0)} of WAL during the copy (index builds and the catch-up add to it).`
    : `The source's WAL rate could not be measured, so the WAL the slot retains during the copy of ${formatBytes(copyBytes)} cannot be estimated.`;
  // Suggested cap: twice the estimate, at least 10 GB, in whole GB.
  const suggestGb = Math.max(10, Math.ceil((2 * (retained ?? 0)) / 1024 ** 3));
  const cap = `ALTER SYSTEM SET max_slot_wal_keep_size = '${suggestGb}GB'; SELECT pg_reload_conf();`;
  const keep = s.maxSlotWalKeepSizeMb;
  if (keep === null || keep < 0) {
    return [
      {
        code: 'SOURCE_WAL_KEEP_UNLIMITED',
        severity: 'warning',
        message: `${keep === null ? `PostgreSQL ${s.version} has no max_slot_wal_keep_size` : 'Source max_slot_wal_keep_size = -1 (unlimited)'}: while the migration lags (or if it is abandoned without clean) the slot keeps WAL on the source until its disk is full. ${estimate}`,
        fix:
          keep === null
            ? "Watch free disk space on the source's WAL volume during the migration ('pg-live-migrate status' shows the retained WAL) and run clean if you abandon it."
            : `Watch free disk space on the source's WAL volume ('pg-live-migrate status' shows the retained WAL), or cap it above the estimate: ${cap} (a slot past the cap is invalidated and the migration must start over).`,
      },
    ];
  }
  const keepBytes = keep * 1024 * 1024;
  if (retained !== undefined && keepBytes < 2 * retained) {
    const tooSmall = keepBytes < retained;
    return [
      {
        code: 'SOURCE_WAL_KEEP_TOO_SMALL',
        severity: tooSmall ? 'error' : 'warning',
        message: `Source max_slot_wal_keep_size = ${keep}MB is ${tooSmall ? 'below' : 'less than twice'} the estimated WAL retention; ${tooSmall ? 'the slot would be invalidated during the copy and the migration would have to start over' : 'little margin is left for index builds and the catch-up'}. ${estimate}`,
        fix: `${cap} (make sure the WAL volume has that much free space)`,
      },
    ];
  }
  return [
    {
      code: 'SOURCE_WAL_RETENTION_ESTIMATE',
      severity: 'info',
      message: `${estimate} Source max_slot_wal_keep_size = ${keep}MB.`,
      fix: 'Nothing to do.',
    },
  ];
}

// --- client tools -----------------------------------------------------------------------------------

function checkTools(tools: ToolFact[], source?: SourceFacts): Finding[] {
  const out: Finding[] = [];
  const sourceMajor = source && source.versionNum >= 100000 ? majorOf(source.versionNum) : undefined;
  const pkg = sourceMajor ?? 'N';
  const install = `Install the PostgreSQL ${pkg} client tools (e.g. apt-get install postgresql-client-${pkg}) and pass --pg-bindir /usr/lib/postgresql/${pkg}/bin, or put them first on PATH.`;
  for (const t of tools) {
    // pg_dumpall only copies roles, which `copy --skip-roles` leaves out: a warning, not a blocker.
    const severity: Severity = t.tool === 'pg_dumpall' ? 'warning' : 'error';
    const rolesNote = t.tool === 'pg_dumpall' ? ' copy needs it to create roles unless --skip-roles.' : '';
    if (!t.found) {
      out.push({
        code: 'PG_TOOL_NOT_FOUND',
        severity,
        message: `${t.tool} was not found (looked for ${t.path}).${rolesNote}`,
        fix: install,
        objects: [t.tool],
      });
    } else if (t.major === null) {
      out.push({
        code: 'PG_TOOL_VERSION_UNKNOWN',
        severity,
        message: `${t.path} --version did not report a PostgreSQL version: ${t.error ?? 'no output'}.${rolesNote}`,
        fix: install,
        objects: [t.tool],
      });
    } else if (sourceMajor !== undefined && t.major < sourceMajor) {
      out.push({
        code: 'PG_TOOL_TOO_OLD',
        severity,
        message: `${t.tool} at ${t.path} is major version ${t.major}, older than the source (PostgreSQL ${source?.version}); it refuses to dump a newer server.${rolesNote}`,
        fix: install,
        objects: [t.tool],
      });
    }
  }
  const dump = tools.find((t) => t.tool === 'pg_dump');
  const restore = tools.find((t) => t.tool === 'pg_restore');
  if (dump?.major != null && restore?.major != null && restore.major < dump.major) {
    out.push({
      code: 'PG_TOOL_TOO_OLD',
      severity: 'error',
      message: `pg_restore at ${restore.path} is major version ${restore.major}, older than pg_dump at ${dump.path} (${dump.major}); it cannot read that pg_dump's archives.`,
      fix: `Use pg_dump and pg_restore from the same installation: pass --pg-bindir /usr/lib/postgresql/${dump.major}/bin.`,
      objects: ['pg_restore'],
    });
  }
  return out;
}

// --- target -----------------------------------------------------------------------------------------

function checkTarget(facts: PreflightFacts, t: TargetFacts): Finding[] {
  const out: Finding[] = [];
  const id = facts.migrationId;
  if (t.migration) {
    const source = facts.source.ok ? facts.source.facts : undefined;
    const slot = source?.names.slot;
    const slotState = !source
      ? 'the source was not reached'
      : source.slot
        ? `the source has slot '${slot}'${source.slot.activePid != null ? ` (held by backend ${source.slot.activePid})` : ''}`
        : `the source has no slot '${slot}'`;
    out.push({
      code: 'MIGRATION_RESUMABLE',
      severity: 'info',
      message: `The target records migration '${id}' (phase ${t.migration.phase}); ${slotState}. The target's tables are that migration's, not a conflict.`,
      fix: `Continue it (e.g. 'pg-live-migrate copy --resume --migration-id ${id}'), or start over with 'pg-live-migrate clean --migration-id ${id}' and an empty target.`,
    });
  } else if (t.userTableCount > 0) {
    const names = t.userTables.map(displayName);
    const more = t.userTableCount - names.length;
    out.push({
      code: 'TARGET_NOT_EMPTY',
      severity: 'error',
      message: `The target database ${quoteIdent(t.database)} already has ${plural(t.userTableCount, 'user table')} in the schemas to migrate: ${names.join(', ')}${more > 0 ? ` … and ${more} more` : ''}.`,
      fix: 'Point --target at an empty database (CREATE DATABASE … on the target), drop those tables, or copy into existing empty tables with copy --skip-schema.',
      objects: names,
    });
  }
  return out;
}

function checkCompatibility(s: SourceFacts, t: TargetFacts): Finding[] {
  const out: Finding[] = [];
  const sourceMajor = majorOf(s.versionNum);
  const targetMajor = majorOf(t.versionNum);
  if (targetMajor < sourceMajor) {
    out.push({
      code: 'TARGET_VERSION_OLDER',
      severity: 'warning',
      message: `The target runs PostgreSQL ${t.version}, older than the source's ${s.version}. pg_dump output is only guaranteed to restore into the same or a newer major version; newer syntax in the schema may fail to restore.`,
      fix: `Use a target on PostgreSQL ${sourceMajor} or later, or try the schema restore on a scratch database of the target's version first.`,
    });
  }
  const targetRan = (check: ProbeName) => !t.skipped.some((k) => k.check === check);
  if (targetRan('available-extensions')) {
    const available = new Set(t.availableExtensions);
    // TimescaleDB has its own finding (TIMESCALEDB_MISSING_ON_TARGET) when the target's was read.
    const missing = s.extensions.filter(
      (e) => !available.has(e.name) && !(e.name === TIMESCALEDB && t.timescaledb !== null),
    );
    if (missing.length > 0) {
      out.push({
        code: 'TARGET_EXTENSION_UNAVAILABLE',
        severity: 'error',
        message: `${plural(missing.length, 'extension')} installed on the source ${missing.length === 1 ? 'is' : 'are'} not available on the target: ${listNames(missing.map((e) => `${e.name} ${e.version}`))}.`,
        fix: 'Install the extension packages on the target server (on managed services: enable them in the allowed extensions); SELECT name FROM pg_available_extensions; on the target must list them.',
        objects: missing.map((e) => e.name),
      });
    }
  }
  if (targetRan('target-tablespaces')) {
    const present = new Set(t.tablespaces);
    for (const space of s.tablespaces) {
      const names = space.relations.map(displayName);
      if (present.has(space.name)) {
        out.push({
          code: 'TABLESPACES_KEPT',
          severity: 'info',
          message: `${plural(names.length, 'relation')} in tablespace ${quoteIdent(space.name)} (${listNames(names)}) ${names.length === 1 ? 'is' : 'are'} restored into the target's tablespace of the same name.`,
          fix: 'Nothing to do, if that tablespace has room on the target.',
          objects: names,
        });
      } else {
        out.push({
          code: 'TABLESPACE_MISSING_ON_TARGET',
          severity: 'error',
          message: `${plural(names.length, 'relation')} of the source ${names.length === 1 ? 'uses' : 'use'} tablespace ${quoteIdent(space.name)} (${listNames(names)}), which the target lacks: the schema restore sets default_tablespace = ${space.name} and fails.`,
          fix: `On the target: CREATE TABLESPACE ${quoteIdent(space.name)} LOCATION '<empty directory owned by postgres>'; (managed services have no custom tablespaces: move these relations to pg_default on the source first with ALTER TABLE … SET TABLESPACE pg_default).`,
          objects: names,
        });
      }
    }
  }
  if (s.encoding !== t.encoding) {
    const safe = t.encoding === 'UTF8' && s.encoding !== 'SQL_ASCII';
    out.push({
      code: 'ENCODING_MISMATCH',
      severity: safe ? 'warning' : 'error',
      message: `The source database is ${s.encoding}, the target ${t.encoding}. ${safe ? 'Every character converts to UTF8, but byte lengths (and length limits in bytes) change.' : s.encoding === 'SQL_ASCII' ? 'SQL_ASCII stores unchecked bytes; rows with bytes that are not valid in the target encoding fail to copy.' : 'Characters with no equivalent in the target encoding make the copy fail.'}`,
      fix: `Create the target database with the source's encoding and locale: CREATE DATABASE ${quoteIdent(t.database)} TEMPLATE template0 ENCODING ${quoteLiteral(s.encoding)} LC_COLLATE ${quoteLiteral(s.collate)} LC_CTYPE ${quoteLiteral(s.ctype)};`,
    });
  }
  const locale = (f: ServerFacts) =>
    `${f.localeProvider === 'i' ? `ICU ${f.icuLocale ?? '?'}, ` : ''}LC_COLLATE ${f.collate}, LC_CTYPE ${f.ctype}`;
  if (locale(s) !== locale(t)) {
    out.push({
      code: 'COLLATION_MISMATCH',
      severity: 'warning',
      message: `The source database uses ${locale(s)}; the target ${locale(t)}. Text sorts and compares differently on the target (ORDER BY, range conditions, upper/lower); indexes are built there, so they stay consistent.`,
      fix: `If the application depends on the order, create the target database with the source's locale: CREATE DATABASE ${quoteIdent(t.database)} TEMPLATE template0 ENCODING ${quoteLiteral(s.encoding)} LC_COLLATE ${quoteLiteral(s.collate)} LC_CTYPE ${quoteLiteral(s.ctype)};`,
    });
  }
  return out;
}

function skippedFindings(role: 'source' | 'target', skipped: SkippedCheck[]): Finding[] {
  return skipped.map((k) => ({
    code: 'PREFLIGHT_CHECK_SKIPPED' as const,
    severity: 'warning' as const,
    message: `Could not check ${k.check} on the ${role}: ${k.message}`,
    fix: `Grant the ${role} user read access to what the message names, or verify this condition by hand.`,
    objects: [k.check],
  }));
}

// --- text helpers -----------------------------------------------------------------------------------

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function listNames(names: string[]): string {
  if (names.length <= MAX_LISTED) return names.join(', ');
  return `${names.slice(0, MAX_LISTED).join(', ')} … and ${names.length - MAX_LISTED} more`;
}
