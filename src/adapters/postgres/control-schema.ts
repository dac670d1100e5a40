// The tool's state on the target, all in one schema that `clean` drops: the migration row (phase, slot,
// snapshot, consistent point), finished steps, and the copy plan with a done mark per part.
// Each part's rows and its done mark commit in one target transaction, which is what makes resume exact.
import type pg from 'pg';
import type { PartPlan } from '../../core/plan';
import { quoteIdent } from '../../core/sql';

// Not 'pg_live_migrate': PostgreSQL reserves the pg_ prefix for system schemas (CREATE SCHEMA refuses it).
export const CONTROL_SCHEMA = '_pg_live_migrate';
const S = quoteIdent(CONTROL_SCHEMA);

export const Phase = {
  preflight: 'preflight',
  snapshot: 'snapshot',
  copy: 'copy',
  replay: 'replay',
  cutover: 'cutover',
  done: 'done',
  failed: 'failed',
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

export interface MigrationRow {
  migrationId: string;
  phase: Phase;
  slotName: string;
  publications: string[];
  snapshotName: string | null;
  snapshotHolderPid: number | null;
  consistentLsn: string | null;
  schemas: string[] | null;
  copyStartedAt: Date | null;
  copyFinishedAt: Date | null;
  error: { code: string; message: string; hint: string } | null;
}

export interface PartRow extends PartPlan {
  rows: number | null;
  bytes: number | null;
  seconds: number | null;
  done: boolean;
}

export async function ensureControlSchema(client: pg.Client): Promise<void> {
  // IF NOT EXISTS is not safe against a concurrent creator (two runners starting together hit a unique
  // violation in the catalog), so creators take a transaction-level advisory lock first.
  await client.query(ENSURE_SQL).catch(async (error) => {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  });
}

const ENSURE_SQL = `
    BEGIN;
    SELECT pg_advisory_xact_lock(hashtext('${CONTROL_SCHEMA}'));
    CREATE SCHEMA IF NOT EXISTS ${S};
    CREATE TABLE IF NOT EXISTS ${S}.migration (
      migration_id text PRIMARY KEY,
      phase text NOT NULL,
      slot_name text NOT NULL,
      publications text[] NOT NULL DEFAULT '{}',
      snapshot_name text,
      snapshot_holder_pid integer,
      consistent_lsn pg_lsn,
      schemas text[],
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      copy_started_at timestamptz,
      copy_finished_at timestamptz,
      error jsonb
    );
    -- TimescaleDB jobs created on the target (paused) for the source's jobs, resumed at cutover.
    CREATE TABLE IF NOT EXISTS ${S}.ts_job (
      migration_id text NOT NULL,
      source_job_id integer NOT NULL,
      target_job_id integer NOT NULL,
      PRIMARY KEY (migration_id, source_job_id)
    );
    -- Chunks created on the source during the migration, added to the publication by the replay.
    CREATE TABLE IF NOT EXISTS ${S}.ts_late_chunk (
      migration_id text NOT NULL,
      chunk_schema text NOT NULL,
      chunk_name text NOT NULL,
      hypertable_schema text NOT NULL,
      hypertable_name text NOT NULL,
      added_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (migration_id, chunk_schema, chunk_name)
    );
    -- Published only after its first rows (no superuser, so no schema publication): copied again at cutover.
    ALTER TABLE ${S}.ts_late_chunk ADD COLUMN IF NOT EXISTS recopy boolean NOT NULL DEFAULT false;
    -- The earliest time replayed changes touched per hypertable (NULL: everything): the cutover refreshes
    -- continuous aggregates from there.
    CREATE TABLE IF NOT EXISTS ${S}.ts_touched (
      migration_id text NOT NULL,
      hypertable_schema text NOT NULL,
      hypertable_name text NOT NULL,
      min_value text,
      PRIMARY KEY (migration_id, hypertable_schema, hypertable_name)
    );
    CREATE TABLE IF NOT EXISTS ${S}.step (
      migration_id text NOT NULL,
      step text NOT NULL,
      done_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (migration_id, step)
    );
    CREATE TABLE IF NOT EXISTS ${S}.copy_part (
      migration_id text NOT NULL,
      part_id integer NOT NULL,
      table_schema text NOT NULL,
      table_name text NOT NULL,
      part_index integer NOT NULL,
      part_count integer NOT NULL,
      range_kind text NOT NULL,
      range_column text,
      range_from text,
      range_to text,
      est_bytes bigint NOT NULL DEFAULT 0,
      rows bigint,
      bytes bigint,
      seconds double precision,
      done_at timestamptz,
      PRIMARY KEY (migration_id, part_id)
    );
    -- applied_lsn is written in the same transaction as the changes it covers (the exactly-once point);
    -- the other columns are a best-effort status the running replay refreshes for status and cutover.
    CREATE TABLE IF NOT EXISTS ${S}.replay (
      migration_id text PRIMARY KEY,
      applied_lsn pg_lsn NOT NULL,
      spooled_lsn pg_lsn,
      last_commit_time timestamptz,
      source_lsn pg_lsn,
      lag_bytes bigint,
      lag_seconds double precision,
      source_wal_rate double precision,
      replay_rate double precision,
      retained_bytes bigint,
      trigger_mode text,
      paused_at pg_lsn,
      heartbeat_at timestamptz,
      process text
    );
    -- Changes received during the copy, kept until they can be applied (lets the slot advance meanwhile).
    CREATE TABLE IF NOT EXISTS ${S}.spool (
      migration_id text NOT NULL,
      seq bigint NOT NULL,
      end_lsn pg_lsn,
      change jsonb,
      PRIMARY KEY (migration_id, seq)
    );
    -- Requests to a running replay (cutover, pause for validation), from any process or machine.
    CREATE TABLE IF NOT EXISTS ${S}.request (
      id bigserial PRIMARY KEY,
      migration_id text NOT NULL,
      kind text NOT NULL,
      params jsonb NOT NULL DEFAULT '{}',
      state text NOT NULL DEFAULT 'pending',
      result jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- Tables (re)copied from a fresh snapshot after the first one was lost: changes committed before
    -- lsn are skipped for them (mode skip: the whole table is at lsn) or applied idempotently (mode
    -- idempotent: keyed tables mixing parts copied at both points).
    CREATE TABLE IF NOT EXISTS ${S}.refresh (
      migration_id text NOT NULL,
      table_schema text NOT NULL,
      table_name text NOT NULL,
      lsn pg_lsn NOT NULL,
      mode text NOT NULL,
      PRIMARY KEY (migration_id, table_schema, table_name)
    );
    -- Target objects changed for the replay and restored at cutover (triggers, identity columns).
    CREATE TABLE IF NOT EXISTS ${S}.altered (
      migration_id text NOT NULL,
      kind text NOT NULL,
      table_schema text NOT NULL,
      table_name text NOT NULL,
      detail text NOT NULL DEFAULT '',
      PRIMARY KEY (migration_id, kind, table_schema, table_name, detail)
    );
    -- Slack: the one live message per migration (kind 'progress', with notes the bot shows) and the
    -- cutover approval requests (kind 'approval:<key>', decided at most once).
    CREATE TABLE IF NOT EXISTS ${S}.slack_message (
      migration_id text NOT NULL,
      kind text NOT NULL,
      channel text NOT NULL,
      ts text NOT NULL,
      state jsonb NOT NULL DEFAULT '{}',
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (migration_id, kind)
    );
    COMMIT;
  `;

export async function controlSchemaExists(client: pg.Client): Promise<boolean> {
  const { rows } = await client.query(`SELECT to_regclass($1) IS NOT NULL AS present`, [`${S}.migration`]);
  return rows[0]?.present === true;
}

export async function readMigration(
  client: pg.Client,
  migrationId: string,
): Promise<MigrationRow | undefined> {
  if (!(await controlSchemaExists(client))) return undefined;
  const { rows } = await client.query(
    `SELECT migration_id, phase, slot_name, publications, snapshot_name, snapshot_holder_pid,
            consistent_lsn::text AS consistent_lsn, schemas, copy_started_at, copy_finished_at, error
       FROM ${S}.migration WHERE migration_id = $1`,
    [migrationId],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    migrationId: r.migration_id,
    phase: r.phase,
    slotName: r.slot_name,
    publications: r.publications,
    snapshotName: r.snapshot_name,
    snapshotHolderPid: r.snapshot_holder_pid,
    consistentLsn: r.consistent_lsn,
    schemas: r.schemas,
    copyStartedAt: r.copy_started_at,
    copyFinishedAt: r.copy_finished_at,
    error: r.error,
  };
}

export async function insertMigration(
  client: pg.Client,
  row: Pick<
    MigrationRow,
    | 'migrationId'
    | 'phase'
    | 'slotName'
    | 'publications'
    | 'snapshotName'
    | 'snapshotHolderPid'
    | 'consistentLsn'
    | 'schemas'
  >,
): Promise<void> {
  await client.query(
    `INSERT INTO ${S}.migration
       (migration_id, phase, slot_name, publications, snapshot_name, snapshot_holder_pid, consistent_lsn, schemas)
     VALUES ($1, $2, $3, $4, $5, $6, $7::pg_lsn, $8)`,
    [
      row.migrationId,
      row.phase,
      row.slotName,
      row.publications,
      row.snapshotName,
      row.snapshotHolderPid,
      row.consistentLsn,
      row.schemas,
    ],
  );
}

export async function updateMigration(
  client: pg.Client,
  migrationId: string,
  changes: Partial<{
    phase: Phase;
    snapshotName: string | null;
    snapshotHolderPid: number | null;
    copyStartedAt: 'now';
    copyFinishedAt: 'now';
    error: { code: string; message: string; hint: string } | null;
  }>,
): Promise<void> {
  const columns: Record<string, string> = {
    phase: 'phase',
    snapshotName: 'snapshot_name',
    snapshotHolderPid: 'snapshot_holder_pid',
    copyStartedAt: 'copy_started_at',
    copyFinishedAt: 'copy_finished_at',
    error: 'error',
  };
  const sets: string[] = ['updated_at = now()'];
  const values: unknown[] = [migrationId];
  for (const [key, value] of Object.entries(changes)) {
    const column = columns[key];
    if (!column || value === undefined) continue;
    if (value === 'now') {
      sets.push(`${column} = now()`);
    } else {
      values.push(key === 'error' && value !== null ? JSON.stringify(value) : value);
      sets.push(`${column} = $${values.length}`);
    }
  }
  await client.query(`UPDATE ${S}.migration SET ${sets.join(', ')} WHERE migration_id = $1`, values);
}

export async function isStepDone(client: pg.Client, migrationId: string, step: string): Promise<boolean> {
  const { rowCount } = await client.query(`SELECT 1 FROM ${S}.step WHERE migration_id = $1 AND step = $2`, [
    migrationId,
    step,
  ]);
  return (rowCount ?? 0) > 0;
}

/** Marks a step done; call inside the transaction that did the step's work where there is one. */
export async function markStepDone(client: pg.Client, migrationId: string, step: string): Promise<void> {
  await client.query(`INSERT INTO ${S}.step (migration_id, step) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
    migrationId,
    step,
  ]);
}

export async function insertParts(client: pg.Client, migrationId: string, parts: PartPlan[]): Promise<void> {
  if (parts.length === 0) return;
  await client.query(
    `INSERT INTO ${S}.copy_part
       (migration_id, part_id, table_schema, table_name, part_index, part_count, range_kind, range_column,
        range_from, range_to, est_bytes)
     SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[], $8::text[],
                              $9::text[], $10::text[], $11::bigint[])
     ON CONFLICT DO NOTHING`,
    [
      migrationId,
      parts.map((p) => p.partId),
      parts.map((p) => p.schema),
      parts.map((p) => p.name),
      parts.map((p) => p.partIndex),
      parts.map((p) => p.partCount),
      parts.map((p) => p.rangeKind),
      parts.map((p) => p.rangeColumn),
      parts.map((p) => p.rangeFrom),
      parts.map((p) => p.rangeTo),
      parts.map((p) => p.estBytes),
    ],
  );
}

export async function readParts(client: pg.Client, migrationId: string): Promise<PartRow[]> {
  if (!(await controlSchemaExists(client))) return [];
  const { rows } = await client.query(
    `SELECT ${PART_COLUMNS} FROM ${S}.copy_part WHERE migration_id = $1 ORDER BY part_id`,
    [migrationId],
  );
  return rows.map(toPartRow);
}

const PART_COLUMNS = `part_id, table_schema, table_name, part_index, part_count, range_kind, range_column, range_from,
            range_to, est_bytes, rows, bytes, seconds, done_at IS NOT NULL AS done`;

function toPartRow(r: Record<string, unknown>): PartRow {
  return {
    partId: r.part_id as number,
    schema: r.table_schema as string,
    name: r.table_name as string,
    partIndex: r.part_index as number,
    partCount: r.part_count as number,
    rangeKind: r.range_kind as PartRow['rangeKind'],
    rangeColumn: r.range_column as string | null,
    rangeFrom: r.range_from as string | null,
    rangeTo: r.range_to as string | null,
    estBytes: Number(r.est_bytes),
    rows: r.rows === null ? null : Number(r.rows),
    bytes: r.bytes === null ? null : Number(r.bytes),
    seconds: r.seconds as number | null,
    done: r.done as boolean,
  };
}

/**
 * Opens a transaction and claims the biggest part nobody has done or is copying (row lock, SKIP LOCKED):
 * any number of workers, in this process or on other runners, share one plan without copying a part
 * twice; a worker that dies releases its claim with its transaction. Undefined (and no transaction)
 * when nothing is left to claim.
 */
export async function claimPart(client: pg.Client, migrationId: string): Promise<PartRow | undefined> {
  await client.query('BEGIN');
  const { rows } = await client.query(
    `SELECT ${PART_COLUMNS} FROM ${S}.copy_part WHERE migration_id = $1 AND done_at IS NULL
      ORDER BY est_bytes DESC, part_id FOR UPDATE SKIP LOCKED LIMIT 1`,
    [migrationId],
  );
  const row = rows[0];
  if (!row) {
    await client.query('ROLLBACK');
    return undefined;
  }
  return toPartRow(row);
}

/** Parts not done yet, of one table or of the whole plan. */
export async function countPartsLeft(
  client: pg.Client,
  migrationId: string,
  table?: { schema: string; name: string },
): Promise<number> {
  const { rows } = await client.query(
    `SELECT count(*)::int AS n FROM ${S}.copy_part WHERE migration_id = $1 AND done_at IS NULL
        AND ($2::text IS NULL OR (table_schema = $2 AND table_name = $3))`,
    [migrationId, table?.schema ?? null, table?.name ?? null],
  );
  return rows[0]?.n ?? 0;
}

export async function markPartDone(
  client: pg.Client,
  migrationId: string,
  partId: number,
  stats: { rows: number; bytes: number; seconds: number },
): Promise<void> {
  await client.query(
    `UPDATE ${S}.copy_part SET rows = $3, bytes = $4, seconds = $5, done_at = now()
      WHERE migration_id = $1 AND part_id = $2`,
    [migrationId, partId, stats.rows, stats.bytes, stats.seconds],
  );
}

/** Removes this migration's rows; drops the schema when no other migration is left in it. */
export async function dropControlState(
  client: pg.Client,
  migrationId: string,
): Promise<{ rows: number; schemaDropped: boolean }> {
  if (!(await controlSchemaExists(client))) return { rows: 0, schemaDropped: false };
  // A control schema from an older release may lack the newer tables.
  await ensureControlSchema(client);
  let rows = 0;
  for (const table of [
    'copy_part',
    'step',
    'replay',
    'spool',
    'request',
    'altered',
    'refresh',
    'slack_message',
    'ts_job',
    'ts_late_chunk',
    'ts_touched',
    'migration',
  ]) {
    const result = await client.query(`DELETE FROM ${S}.${table} WHERE migration_id = $1`, [migrationId]);
    rows += result.rowCount ?? 0;
  }
  const { rows: left } = await client.query(`SELECT count(*)::int AS n FROM ${S}.migration`);
  if (left[0]?.n === 0) {
    await client.query(`DROP SCHEMA ${S} CASCADE`);
    return { rows, schemaDropped: true };
  }
  return { rows, schemaDropped: false };
}
