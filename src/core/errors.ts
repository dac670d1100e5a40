// The one error type of the product: a stable code, what was observed, what to do next.
// Codes are public API (scripts and the Action match on them); the exit code follows from the category.

export const ExitCode = {
  ok: 0,
  internal: 1,
  config: 2,
  preflight: 3,
  runtime: 4,
  validation: 5,
} as const;
export type ExitCategory = Exclude<keyof typeof ExitCode, 'ok'>;

/** Every error code with its category and a one-line description (the README's troubleshooting table). */
export const ERROR_CODES = {
  CONFIG_MISSING_SOURCE: ['config', 'No source connection string was given.'],
  CONFIG_MISSING_TARGET: ['config', 'No target connection string was given.'],
  CONFIG_INVALID_URI: ['config', 'A connection string could not be parsed.'],
  CONFIG_INVALID_MIGRATION_ID: ['config', 'The migration id is not 1-40 characters of [a-z0-9_].'],
  CONFIG_INVALID_OPTION: ['config', 'A command-line option is unknown or has a bad value.'],
  CONFIG_UNKNOWN_COMMAND: ['config', 'The command is not one this version knows.'],
  PREFLIGHT_FAILED: ['preflight', 'Preflight found at least one error; see its findings.'],
  CONNECTION_FAILED: ['runtime', 'A server could not be reached.'],
  AUTHENTICATION_FAILED: ['runtime', 'The server refused the user name or password.'],
  DATABASE_NOT_FOUND: ['runtime', 'The database named in the connection string does not exist.'],
  PERMISSION_DENIED: ['runtime', 'The connecting user lacks a privilege the step needs.'],
  SOURCE_WAL_LEVEL_NOT_LOGICAL: ['preflight', "The source's wal_level is not 'logical'."],
  SLOT_ALREADY_EXISTS: [
    'runtime',
    'A replication slot with this migration id exists and is not ours to reuse.',
  ],
  SLOT_IN_USE: ['runtime', 'The replication slot is held by another live process.'],
  TARGET_NOT_EMPTY: ['runtime', 'The target already has user tables in the schemas to migrate.'],
  SNAPSHOT_NOT_FOUND: ['runtime', 'No exported snapshot is recorded for this migration.'],
  SNAPSHOT_EXPIRED: [
    'runtime',
    'The process holding the exported snapshot has ended, so the snapshot is gone.',
  ],
  MIGRATION_NOT_FOUND: ['runtime', 'The target holds no state for this migration id.'],
  PG_TOOL_NOT_FOUND: ['preflight', 'pg_dump, pg_restore or pg_dumpall was not found.'],
  PG_TOOL_TOO_OLD: ['preflight', "pg_dump is older than the source server's major version."],
  SCHEMA_DUMP_FAILED: ['runtime', 'pg_dump could not dump the schema.'],
  SCHEMA_RESTORE_FAILED: ['runtime', 'The schema could not be restored on the target.'],
  COPY_FAILED: ['runtime', 'Copying a table part failed.'],
  COPY_INTERRUPTED: ['runtime', 'The copy was stopped (Ctrl-C or SIGTERM) before every part was copied.'],
  COPY_NOT_FINISHED: ['runtime', 'Replay needs a finished copy; this migration has not finished its copy.'],
  REPLAY_SCHEMA_CHANGED: [
    'runtime',
    'A table changed on the source during replay (DDL); the target must be changed alike.',
  ],
  REPLAY_NEW_TABLE: ['runtime', 'A table was created on the source in a migrated schema during replay.'],
  REPLAY_ROW_NOT_FOUND: ['runtime', 'A replayed UPDATE or DELETE did not find its row on the target.'],
  REPLAY_STREAM_FAILED: ['runtime', 'The replication stream from the source ended with an error.'],
  REPLAY_APPLY_FAILED: ['runtime', 'The target refused a replayed change (constraint, type, permission …).'],
  REPLAY_NOT_RUNNING: ['runtime', 'No replay process is running for this migration.'],
  REPLAY_RUNNING: ['runtime', 'A replay process is running, and the step needs it stopped.'],
  ACTION_DISPATCH_FAILED: [
    'runtime',
    'The next replay segment could not be dispatched (workflow_dispatch refused).',
  ],
  CUTOVER_LAG_TOO_HIGH: ['runtime', 'Cutover was refused because the replay lag is above --max-lag.'],
  CUTOVER_TIMEOUT: ['runtime', 'Cutover did not complete within --timeout.'],
  CUTOVER_FAILED: [
    'runtime',
    'Cutover failed; the source was unfenced. Resume the replay (replay --resume) and ask again.',
  ],
  VALIDATION_MISMATCH: ['validation', 'Source and target differ.'],
  VALIDATION_INTERRUPTED: ['validation', 'Validation was stopped before every table was compared.'],
  INTERNAL: ['internal', 'A bug: please report it with the log.'],
  SOURCE_VERSION_UNSUPPORTED: ['preflight', 'The source is older than PostgreSQL 10 (no logical decoding).'],
  SOURCE_NO_FREE_REPLICATION_SLOT: [
    'preflight',
    'Every replication slot allowed by max_replication_slots is taken.',
  ],
  SOURCE_NO_FREE_WAL_SENDER: ['preflight', 'Every WAL sender allowed by max_wal_senders is busy.'],
  TIMESCALEDB_NOT_SUPPORTED_YET: [
    'preflight',
    "The source's TimescaleDB catalog could not be read (e.g. TimescaleDB 1.x), so its hypertables are unknown.",
  ],
  HYPERTABLE_NOT_POSSIBLE: [
    'config',
    'A --hypertable table cannot become a hypertable (missing column, wrong type, a key without the time column, no TimescaleDB on the target).',
  ],
  TIMESCALEDB_OBJECTS_FAILED: [
    'runtime',
    'Continuous aggregates or jobs could not be created on the target; nothing of that step was applied.',
  ],
  TIMESCALEDB_COMPRESSION_MARKERS_OFF: [
    'preflight',
    'Compression is in use but timescaledb.enable_compression_wal_markers is off on the source.',
  ],
} as const satisfies Record<string, readonly [ExitCategory, string]>;
export type ErrorCode = keyof typeof ERROR_CODES;

export class MigrationError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  /** Extra facts for --json output (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    hint: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MigrationError';
    this.code = code;
    this.hint = hint;
    this.details = options?.details;
  }
}

export function isMigrationError(value: unknown): value is MigrationError {
  return value instanceof MigrationError;
}

export function computeExitCode(error: unknown): number {
  if (!isMigrationError(error)) return ExitCode.internal;
  return ExitCode[ERROR_CODES[error.code][0]];
}
