// `copy`: roles, pre-data schema, the data in parallel parts inside the exported snapshot, sequences,
// post-data (indexes, constraints, triggers) in parallel, materialized views. Every step is recorded on
// the target, so `copy --resume` after a crash redoes only what is not done.
import { existsSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { openClient, setCanonicalSession, withClient } from '../adapters/postgres/client';
import { withDatabase } from '../adapters/postgres/connection';
import {
  CONTROL_SCHEMA,
  claimPart,
  countPartsLeft,
  ensureControlSchema,
  insertParts,
  isStepDone,
  type MigrationRow,
  markPartDone,
  markStepDone,
  type PartRow,
  Phase,
  readMigration,
  readParts,
  updateMigration,
} from '../adapters/postgres/control-schema';
import { beginInSnapshot, copyPart } from '../adapters/postgres/copy-part';
import { dumpRoles, dumpSchema, readRestoreSql, type ToolContext } from '../adapters/postgres/pg-tools';
import {
  createTemporarySnapshot,
  dropSlot,
  isBackendAlive,
  type SnapshotHolder,
  slotNameFor,
} from '../adapters/postgres/replication-slot';
import { listMaterializedViews, listTables, readSequences } from '../adapters/postgres/source-catalog';
import {
  buildHypertableSql,
  buildRequestedHypertableSql,
  type ChunkTarget,
  compressLikeSource,
  copyMaterializations,
  createCaggsAndJobs,
  dumpExclusions,
  prepareHypertableRequests,
  readChunkTargets,
  readTimescaleLayout,
  refreshContinuousAggregates,
  type TimescaleLayout,
} from '../adapters/postgres/timescaledb';
import type { CopyOptions } from '../config/options';
import { MigrationError } from '../core/errors';
import { buildCopyPlan, type TableInfo, tableKey } from '../core/plan';
import type { QualifiedName } from '../core/sql';
import { displayName, quoteIdent, quoteQualified } from '../core/sql';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { planPostData, readPostDataOwners } from './post-data';
import { assertTargetEmpty, startSnapshot } from './snapshot';

/** Tables at least this big get their indexes built while the copy goes on (see post-data.ts). */
const EARLY_INDEX_BYTES = 64 * 1024 * 1024;

export interface CopyResult {
  tables: number;
  parts: number;
  partsCopied: number;
  partsSkipped: number;
  rows: number;
  bytes: number;
  seconds: number;
  snapshotName: string;
  consistentLsn: string | null;
}

function copyResult(
  parts: readonly QualifiedName[],
  stats: { copied: number; skipped: number; rows: number; bytes: number },
  seconds: number,
  snapshotName: string,
  consistentLsn: string | null,
): CopyResult {
  return {
    tables: new Set(parts.map((p) => tableKey(p))).size,
    parts: parts.length,
    partsCopied: stats.copied,
    partsSkipped: stats.skipped,
    rows: stats.rows,
    bytes: stats.bytes,
    seconds,
    snapshotName,
    consistentLsn,
  };
}

export async function runCopy(
  ctx: WorkflowContext,
  input: Endpoints,
  options: CopyOptions,
  /** Called once the slot and snapshot are recorded (migrate starts spooling changes then). */
  onSnapshotReady?: () => void,
): Promise<CopyResult> {
  const started = ctx.clock.nowMs();
  const id = options.migrationId;
  const log = (message: string, level: 'info' | 'warn' = 'info') => ctx.emit({ type: 'log', level, message });
  const tools: ToolContext = { binDir: options.pgBindir, env: ctx.env, redactor: ctx.redactor };

  const control = await openClient(input.target);
  let holder: SnapshotHolder | undefined;
  try {
    const targetDb = (await control.query('SELECT current_database() AS db')).rows[0].db as string;
    const endpoints: Endpoints = { source: input.source, target: withDatabase(input.target, targetDb) };
    endpoints.source = await withClient(endpoints.source, async (c) =>
      withDatabase(endpoints.source, (await c.query('SELECT current_database() AS db')).rows[0].db),
    );
    await ensureControlSchema(control);
    let migration = await readMigration(control, id);
    if (options.partsOnly) return await copyAsHelper(ctx, endpoints, control, options, migration, started);

    // 1. The snapshot: named by the user, recorded by a running `snapshot`, or created here.
    let snapshotName: string;
    /** Set when the copy resumes from a fresh snapshot: its exact LSN. */
    let refreshLsn: string | undefined;
    if (migration?.copyFinishedAt) {
      throw new MigrationError(
        'SLOT_ALREADY_EXISTS',
        `Migration '${id}' finished its copy at ${migration.copyFinishedAt.toISOString()}.`,
        `Nothing to copy. To start over, run 'pg-live-migrate clean --migration-id ${id}' and empty the target.`,
      );
    }
    if (options.snapshot) {
      snapshotName = options.snapshot;
      if (!migration) throw missingSnapshotRow(id);
    } else if (migration?.snapshotName && (await sourceBackendAlive(endpoints, migration))) {
      snapshotName = migration.snapshotName;
      log(`Using snapshot ${snapshotName} held by source backend ${migration.snapshotHolderPid}.`);
    } else if (migration?.copyStartedAt) {
      if (!options.resume) {
        throw new MigrationError(
          'SNAPSHOT_EXPIRED',
          `Migration '${id}' started its copy in snapshot ${migration.snapshotName ?? '(none)'}, whose holder has ended.`,
          `Run the same command with --resume: it copies the unfinished parts from a fresh snapshot and the replay reconciles the difference. Or start over: 'pg-live-migrate clean --migration-id ${id}' and an empty target.`,
        );
      }
      // The first snapshot is gone: a temporary slot exports a fresh one at an exact LSN (L2). Unfinished
      // parts are copied at L2; the replay later skips or idempotently applies changes before L2 for them.
      holder = await createTemporarySnapshot(endpoints.source, `${slotNameFor(id)}_resume`);
      snapshotName = holder.snapshotName;
      refreshLsn = holder.consistentLsn;
      await updateMigration(control, id, { snapshotName, snapshotHolderPid: holder.backendPid, error: null });
      log(
        `The snapshot the copy started in (${migration.snapshotName}) is gone: continuing from a fresh snapshot ${snapshotName} at ${refreshLsn}. Parts copied from now on are at that point; the replay reconciles the changes in between (see docs/decisions.md).`,
        'warn',
      );
    } else {
      if (options.resume && !migration) throw notFound(id);
      if (!options.skipSchema) await assertTargetEmpty(control, options.schemas);
      if (migration) {
        // A `snapshot` run ended before any copy began: nothing depends on its slot yet, so start afresh.
        log(`The recorded snapshot of '${id}' is gone and no copy had started: creating a new one.`, 'warn');
        await withClient(endpoints.source, (c) => dropSlot(c, migration?.slotName ?? slotNameFor(id)));
        await control.query(`DELETE FROM "${CONTROL_SCHEMA}".spool WHERE migration_id = $1`, [id]);
        await control.query(`DELETE FROM "${CONTROL_SCHEMA}".replay WHERE migration_id = $1`, [id]);
      }
      ({ holder } = await startSnapshot(endpoints, {
        migrationId: id,
        schemas: options.schemas,
        phase: Phase.copy,
      }));
      snapshotName = holder.snapshotName;
      log(`Created slot ${holder.slotName}; exported snapshot ${snapshotName} at ${holder.consistentLsn}.`);
      migration = await readMigration(control, id);
    }
    if (!migration) throw notFound(id);
    if (migration.error) await updateMigration(control, id, { error: null });
    onSnapshotReady?.();
    if (!migration.copyStartedAt) {
      if (!options.skipSchema && !options.resume && !holder)
        await assertTargetEmpty(control, options.schemas);
      await updateMigration(control, id, { phase: Phase.copy, copyStartedAt: 'now' });
    }

    // 2. Catalog in the snapshot: the tables and their columns exactly as the copy will see them.
    const catalog = await openClient(endpoints.source);
    let tables: TableInfo[];
    let parts: PartRow[];
    let layout: TimescaleLayout | null = null;
    let chunkTargets = new Map<string, ChunkTarget>();
    try {
      await beginInSnapshot(catalog, snapshotName);
      tables = await listTables(catalog, migration.schemas);
      layout = await readTimescaleLayout(catalog, migration.schemas);
      chunkTargets = await readChunkTargets(catalog, tables, layout);
      const workDir = join(options.dir, id);
      await mkdir(workDir, { recursive: true });
      const dumpFile = join(workDir, 'schema.dump');
      const noOwner = options.noOwner || options.skipRoles;

      // The roles and the schema are dumped side by side; roles are applied first (objects name owners).
      const needRoles = !options.skipRoles && !(await isStepDone(control, id, 'roles'));
      const needSchema = !options.skipSchema;
      const needDump = needSchema && !(await isStepDone(control, id, 'post-data')) && !existsSync(dumpFile);
      if (needDump) ctx.emit({ type: 'step', step: 'schema-dump', status: 'start' });
      const [rolesScript] = await Promise.all([
        needRoles ? dumpRoles(tools, endpoints.source) : undefined,
        needDump
          ? // Written under a temporary name and renamed once complete: a crash never leaves half a dump.
            dumpSchema(tools, endpoints.source, {
              snapshotName,
              schemas: migration.schemas,
              file: `${dumpFile}.partial`,
              exclude: dumpExclusions(layout),
            })
              .then(() => rename(`${dumpFile}.partial`, dumpFile))
              .then(() => ctx.emit({ type: 'step', step: 'schema-dump', status: 'done' }))
          : undefined,
      ]);
      if (rolesScript !== undefined) {
        await applyRoles(ctx, control, rolesScript);
        await markStepDone(control, id, 'roles');
      }
      if (needSchema && !(await isStepDone(control, id, 'pre-data'))) {
        ctx.emit({ type: 'step', step: 'pre-data', status: 'start' });
        const sql = await readRestoreSql(tools, { file: dumpFile, section: 'pre-data', noOwner });
        // The hypertables become hypertables in the same transaction as the tables they are made of; so do
        // the plain tables named by --hypertable (PostgreSQL to TimescaleDB).
        const hypertables = layout ? `\n${buildHypertableSql(layout)}` : '';
        const requested = options.hypertables.length
          ? `\n${buildRequestedHypertableSql(await prepareHypertableRequests(catalog, control, options.hypertables), options.hypertables)}`
          : '';
        await restoreInTransaction(endpoints, `${sql}${hypertables}${requested}`, id, 'pre-data');
        ctx.emit({ type: 'step', step: 'pre-data', status: 'done' });
      }

      // 3. The plan, made once and stored on the target so a resume copies exactly the same parts.
      parts = await readParts(control, id);
      if (parts.length === 0) {
        const keyBounds = await readKeyBounds(catalog, tables, options.splitTablesLargerThan);
        const plan = buildCopyPlan(tables, { splitBytes: options.splitTablesLargerThan, keyBounds });
        await insertParts(control, id, plan);
        parts = await readParts(control, id);
      }
      if (refreshLsn) parts = await planRefresh(ctx, control, id, tables, parts, refreshLsn);
      const sequences = await readSequences(catalog, migration.schemas);
      const postDataDue = needSchema && !(await isStepDone(control, id, 'post-data'));
      const postData = postDataDue
        ? await planPostData(ctx, tools, endpoints, {
            file: dumpFile,
            noOwner,
            jobs: options.indexJobs,
            workDir,
            owners: await readPostDataOwners(catalog),
            earlyTables: new Set(tables.filter((t) => t.bytes >= EARLY_INDEX_BYTES).map(tableKey)),
            hypertables: new Set(
              [...tables.filter((t) => t.hypertable), ...options.hypertables].map(tableKey),
            ),
          })
        : undefined;
      await catalog.query('COMMIT');

      // 4. Data; a big table's indexes are built as soon as its last part is in.
      const columnsByTable = new Map(tables.map((t) => [tableKey(t), t.columns]));
      const stats = await copyParts(ctx, endpoints, {
        migrationId: id,
        snapshotName,
        parts,
        columnsByTable,
        chunkTargets,
        jobs: options.tableJobs,
        skipSchema: options.skipSchema,
        onTableCopied: (table) => postData?.tableCopied(table),
      });

      // 5. Sequences at their snapshot values, then post-data and materialized views.
      if (!(await isStepDone(control, id, 'sequences'))) {
        await control.query('BEGIN');
        for (const seq of sequences) {
          if (seq.lastValue === null) continue;
          await control.query('SELECT pg_catalog.setval($1::regclass, $2::bigint, $3)', [
            quoteQualified(seq),
            seq.lastValue,
            seq.isCalled,
          ]);
        }
        await markStepDone(control, id, 'sequences');
        await control.query('COMMIT');
        ctx.emit({
          type: 'step',
          step: 'sequences',
          status: 'done',
          detail: `${sequences.length} sequences`,
        });
      }
      if (postData) {
        ctx.emit({ type: 'step', step: 'post-data', status: 'start' });
        await postData.finish();
        await markStepDone(control, id, 'post-data');
        ctx.emit({ type: 'step', step: 'post-data', status: 'done' });
      }
      if (!(await isStepDone(control, id, 'matviews'))) {
        const views = await withClient(endpoints.source, (c) =>
          listMaterializedViews(c, migration?.schemas ?? null),
        );
        for (const view of views) {
          await control.query(`REFRESH MATERIALIZED VIEW ${quoteQualified(view)}`);
        }
        await markStepDone(control, id, 'matviews');
        if (views.length)
          ctx.emit({ type: 'step', step: 'matviews', status: 'done', detail: `${views.length} refreshed` });
      }
      if (layout && needSchema && !(await isStepDone(control, id, 'timescaledb'))) {
        await finishTimescale(ctx, endpoints, control, id, layout);
      }
      if (
        layout?.continuousAggregates.length &&
        needSchema &&
        !(await isStepDone(control, id, 'timescaledb-refresh'))
      ) {
        // Every aggregate computed from the target's raw rows now, while the source stays writable: the
        // cutover then refreshes only what the replay changed.
        ctx.emit({ type: 'step', step: 'aggregates', status: 'start' });
        const refreshed = await refreshContinuousAggregates(control, layout);
        await markStepDone(control, id, 'timescaledb-refresh');
        ctx.emit({ type: 'step', step: 'aggregates', status: 'done', detail: `${refreshed} refreshed` });
      }
      await updateMigration(control, id, { copyFinishedAt: 'now', error: null });
      const seconds = (ctx.clock.nowMs() - started) / 1000;
      ctx.emit({ type: 'copy:done', rows: stats.rows, bytes: stats.bytes, seconds });
      return copyResult(parts, stats, seconds, snapshotName, migration.consistentLsn);
    } finally {
      await catalog.end().catch(() => undefined);
    }
  } catch (error) {
    // Leave the reason where `status` (from any machine) can show it; the databases are the journal.
    if (error instanceof MigrationError) {
      await updateMigration(control, id, {
        error: { code: error.code, message: error.message, hint: error.hint },
      }).catch(() => undefined);
    }
    throw error;
  } finally {
    await holder?.close();
    await control.end().catch(() => undefined);
  }
}

/**
 * TimescaleDB after the data: chunks compressed on the source are compressed on the target, then the
 * continuous aggregates (empty until the cutover refreshes them) and the jobs (paused until the cutover)
 * are created in one transaction with the step's mark.
 */
async function finishTimescale(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  control: pg.Client,
  id: string,
  layout: TimescaleLayout,
): Promise<void> {
  ctx.emit({ type: 'step', step: 'timescaledb', status: 'start' });
  const compressed = await withClient(endpoints.source, (source) =>
    compressLikeSource(source, control, layout),
  );
  await control.query('BEGIN');
  try {
    const made = await createCaggsAndJobs(control, id, layout);
    const materialized = await withClient(endpoints.source, (source) =>
      copyMaterializations(source, control, layout),
    );
    await markStepDone(control, id, 'timescaledb');
    await control.query('COMMIT');
    for (const skipped of made.skipped) {
      ctx.emit({
        type: 'log',
        level: 'warn',
        message: `TimescaleDB ${skipped} is of a kind pg-live-migrate does not recreate: create it on the target yourself.`,
      });
    }
    ctx.emit({
      type: 'step',
      step: 'timescaledb',
      status: 'done',
      detail: `${layout.hypertables.length} hypertables, ${compressed} chunks compressed after the copy, ${made.caggs} continuous aggregates (${materialized} materialized rows copied), ${made.jobs} jobs (paused until cutover)`,
    });
  } catch (error) {
    await control.query('ROLLBACK').catch(() => undefined);
    throw new MigrationError(
      'TIMESCALEDB_OBJECTS_FAILED',
      `Creating the continuous aggregates and jobs on the target failed: ${(error as Error).message}`,
      'Nothing of this step was applied. Fix the cause named above on the target (a missing function a job calls, a privilege), then run the same command with --resume.',
      { cause: error },
    );
  }
}

/**
 * `copy --parts-only`: a helper runner joins the copy that a `migrate` (or `copy`) job coordinates. It
 * imports the coordinator's snapshot, claims parts until none is left, and exits; the coordinator does
 * the schema, waits for every part, then builds indexes.
 */
async function copyAsHelper(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  control: pg.Client,
  options: CopyOptions,
  first: MigrationRow | undefined,
  started: number,
): Promise<CopyResult> {
  const id = options.migrationId;
  const deadline = ctx.clock.nowMs() + 10 * 60_000;
  let migration = first;
  let parts: PartRow[] = [];
  // The coordinator may still be taking the snapshot or restoring the schema: wait for its plan.
  for (;;) {
    migration = await readMigration(control, id);
    parts = migration ? await readParts(control, id) : [];
    if (migration?.copyFinishedAt) {
      ctx.emit({
        type: 'log',
        level: 'info',
        message: `The copy of '${id}' is already finished: nothing to help with.`,
      });
      return {
        tables: 0,
        parts: parts.length,
        partsCopied: 0,
        partsSkipped: parts.length,
        rows: 0,
        bytes: 0,
        seconds: 0,
        snapshotName: migration.snapshotName ?? '',
        consistentLsn: migration.consistentLsn,
      };
    }
    if (migration?.snapshotName && parts.length > 0) break;
    if (ctx.clock.nowMs() > deadline || ctx.stopSignal.aborted) {
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        `No copy plan of migration '${id}' appeared on the target within 10 minutes.`,
        "Start the coordinating job first ('pg-live-migrate migrate' or 'copy'); helpers join it with --parts-only.",
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const snapshotName = migration.snapshotName as string;
  if (!(await withClient(endpoints.source, (c) => isBackendAlive(c, migration?.snapshotHolderPid ?? null)))) {
    throw new MigrationError(
      'SNAPSHOT_EXPIRED',
      `The snapshot ${snapshotName} of '${id}' is no longer held, so a helper cannot read at the same point.`,
      'Helpers only join while the coordinating job holds its snapshot; resume the coordinator (migrate --resume), then start helpers again.',
    );
  }
  const { tables, chunkTargets } = await withClient(endpoints.source, async (c) => {
    await beginInSnapshot(c, snapshotName);
    const tables = await listTables(c, migration?.schemas ?? null);
    const layout = await readTimescaleLayout(c, migration?.schemas ?? null);
    return { tables, chunkTargets: await readChunkTargets(c, tables, layout) };
  });
  ctx.emit({
    type: 'log',
    level: 'info',
    message: `Joining the copy of '${id}' in snapshot ${snapshotName}.`,
  });
  const stats = await copyParts(ctx, endpoints, {
    migrationId: id,
    snapshotName,
    parts,
    columnsByTable: new Map(tables.map((t) => [tableKey(t), t.columns])),
    chunkTargets,
    jobs: options.tableJobs,
    skipSchema: options.skipSchema,
    partsOnly: true,
  });
  const seconds = (ctx.clock.nowMs() - started) / 1000;
  ctx.emit({
    type: 'log',
    level: 'info',
    message: `Helper done: copied ${stats.copied} parts (${stats.rows - parts.filter((p) => p.done).reduce((s, p) => s + (p.rows ?? 0), 0)} rows).`,
  });
  return copyResult(parts, stats, seconds, snapshotName, migration.consistentLsn);
}

/**
 * Decides, per table with unfinished parts, how the replay treats its changes from before the fresh
 * snapshot at L2: a table copied entirely at L2 skips them; a keyed table mixing parts from both points
 * gets them idempotently (upserts, deletes that may find nothing), which converges; a table that cannot
 * (no key, or split by ctid ranges, which differ between snapshots) is emptied and copied again whole.
 */
async function planRefresh(
  ctx: WorkflowContext,
  control: pg.Client,
  id: string,
  tables: TableInfo[],
  parts: PartRow[],
  lsn: string,
): Promise<PartRow[]> {
  const byTable = new Map<string, PartRow[]>();
  for (const part of parts) byTable.set(tableKey(part), [...(byTable.get(tableKey(part)) ?? []), part]);
  const info = new Map(tables.map((t) => [tableKey(t), t]));
  let reset = 0;
  let idempotent = 0;
  for (const [key, tableParts] of byTable) {
    const done = tableParts.filter((p) => p.done).length;
    if (done === tableParts.length) continue;
    const table = info.get(key);
    const keyed = Boolean(table?.primaryKey?.length) || table?.replicaIdentity === 'index';
    const mixed = done > 0;
    const mustReset = mixed && (!keyed || tableParts.some((p) => p.rangeKind === 'ctid'));
    const mode = mixed && !mustReset ? 'idempotent' : 'skip';
    const first = tableParts[0];
    if (!first) continue;
    await control.query('BEGIN');
    if (mustReset) {
      await control.query(`TRUNCATE ONLY ${quoteQualified(first)}`);
      await control.query(
        `UPDATE "${CONTROL_SCHEMA}".copy_part SET done_at = NULL, rows = NULL, bytes = NULL, seconds = NULL
          WHERE migration_id = $1 AND table_schema = $2 AND table_name = $3`,
        [id, first.schema, first.name],
      );
      reset += 1;
    }
    if (mode === 'idempotent') idempotent += 1;
    await control.query(
      `INSERT INTO "${CONTROL_SCHEMA}".refresh (migration_id, table_schema, table_name, lsn, mode) VALUES ($1, $2, $3, $4::pg_lsn, $5)
       ON CONFLICT (migration_id, table_schema, table_name) DO UPDATE SET lsn = EXCLUDED.lsn,
         mode = CASE WHEN EXCLUDED.mode = 'skip' AND refresh.mode = 'idempotent' AND $6 THEN 'idempotent' ELSE EXCLUDED.mode END`,
      [id, first.schema, first.name, lsn, mode, !mustReset],
    );
    await control.query('COMMIT');
  }
  ctx.emit({
    type: 'log',
    level: 'info',
    message: `Fresh snapshot at ${lsn}: ${idempotent} tables mix parts from both snapshots (changes before ${lsn} applied idempotently), ${reset} tables are copied again whole.`,
  });
  return readParts(control, id);
}

function notFound(id: string): MigrationError {
  return new MigrationError(
    'MIGRATION_NOT_FOUND',
    `The target has no state for migration '${id}'.`,
    'Check --target and --migration-id, or start the copy without --resume.',
  );
}

function missingSnapshotRow(id: string): MigrationError {
  return new MigrationError(
    'SNAPSHOT_NOT_FOUND',
    `--snapshot was given but the target records no migration '${id}' (the slot and publications come with the snapshot).`,
    `Start the snapshot with 'pg-live-migrate snapshot --migration-id ${id}' against the same target; copy then finds it without --snapshot.`,
  );
}

async function sourceBackendAlive(endpoints: Endpoints, migration: MigrationRow): Promise<boolean> {
  return withClient(endpoints.source, (c) => isBackendAlive(c, migration.snapshotHolderPid));
}

/** min/max of the integer key of every table that will be split (read in the snapshot). */
async function readKeyBounds(client: pg.Client, tables: TableInfo[], splitBytes: number) {
  const bounds = new Map<string, { min: bigint; max: bigint }>();
  for (const t of tables) {
    if (!t.integerKey || splitBytes <= 0 || t.bytes <= splitBytes || t.kind !== 'table') continue;
    const col = quoteIdent(t.integerKey);
    const { rows } = await client.query(
      `SELECT min(${col})::text AS lo, max(${col})::text AS hi FROM ONLY ${quoteQualified(t)}`,
    );
    if (rows[0]?.lo != null) bounds.set(tableKey(t), { min: BigInt(rows[0].lo), max: BigInt(rows[0].hi) });
  }
  return bounds;
}

/** Runs a section's SQL and its done mark in one target transaction: all of it or none. */
async function restoreInTransaction(
  endpoints: Endpoints,
  sql: string,
  id: string,
  step: string,
): Promise<void> {
  await withClient(endpoints.target, async (client) => {
    await client.query('BEGIN');
    try {
      await client.query(sql);
      await markStepDone(client, id, step);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw new MigrationError(
        'SCHEMA_RESTORE_FAILED',
        `Restoring the ${step} schema on the target failed: ${(error as Error).message}`,
        'Nothing of this step was applied. Fix the cause (often a missing extension or role on the target), then run again with --resume.',
        { cause: error },
      );
    }
  });
}

/** Creates the source's roles on the target (no passwords); existing roles are left as they are. */
async function applyRoles(ctx: WorkflowContext, target: pg.Client, script: string): Promise<void> {
  const { rows } = await target.query('SELECT rolname FROM pg_roles');
  const existing = new Set(rows.map((r) => r.rolname as string));
  const created = new Set<string>();
  const roleOf = (statement: string) => {
    const m = /^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)/.exec(statement);
    return m?.[1] ? (m[1].startsWith('"') ? m[1].slice(1, -1).replaceAll('""', '"') : m[1]) : undefined;
  };
  const failures: string[] = [];
  for (const statement of script.split('\n').filter((l) => /^(CREATE ROLE|ALTER ROLE|GRANT) /.test(l))) {
    const role = roleOf(statement);
    if (role !== undefined && existing.has(role)) continue;
    try {
      await target.query(statement);
      if (role !== undefined && statement.startsWith('CREATE')) created.add(role);
    } catch (error) {
      failures.push(`${statement.slice(0, 80)}: ${(error as Error).message}`);
    }
  }
  ctx.emit({ type: 'step', step: 'roles', status: 'done', detail: `${created.size} created` });
  for (const failure of failures.slice(0, 20)) {
    ctx.emit({ type: 'log', level: 'warn', message: `roles: ${ctx.redactor.redact(failure)}` });
  }
}

interface CopyPartsInput {
  migrationId: string;
  snapshotName: string;
  parts: PartRow[];
  columnsByTable: Map<string, string[]>;
  /** TimescaleDB chunks (by tableKey): the hypertable their rows go into on the target, and how. */
  chunkTargets: Map<string, ChunkTarget>;
  jobs: number;
  skipSchema: boolean;
  /** Called with a table's key once every part of it is on the target. */
  onTableCopied?: (table: string) => void;
  /** A helper runner: copy what can be claimed, then return without waiting for the others. */
  partsOnly?: boolean;
}

/**
 * Runs the parts not yet done on `jobs` workers, each with one source connection (in the snapshot) and
 * one target connection. Workers claim parts on the target (see claimPart), so copy runners on other
 * machines (`copy --parts-only`) share the same plan. Unless `partsOnly`, it returns only when every part
 * of the plan is done, by whoever copied it.
 */
async function copyParts(ctx: WorkflowContext, endpoints: Endpoints, input: CopyPartsInput) {
  const done = input.parts.filter((p) => p.done);
  const rowsBefore = done.reduce((s, p) => s + (p.rows ?? 0), 0);
  const bytesBefore = done.reduce((s, p) => s + (p.bytes ?? 0), 0);
  let rows = rowsBefore;
  let bytes = bytesBefore;
  ctx.emit({
    type: 'copy:plan',
    tables: new Set(input.parts.map((p) => tableKey(p))).size,
    parts: input.parts.length,
    partsDone: done.length,
    estBytes: input.parts.reduce((s, p) => s + p.estBytes, 0),
    rowsDone: rows,
    bytesDone: bytes,
  });
  if (done.length > 0)
    ctx.emit({
      type: 'log',
      level: 'info',
      message: `Resuming: ${done.length} of ${input.parts.length} parts are already on the target.`,
    });
  let failure: unknown;
  let copied = 0;
  const worker = async () => {
    const source = await openClient(endpoints.source);
    const target = await openClient(endpoints.target);
    // Ctrl-C must not wait for a multi-gigabyte part: closing both connections aborts the COPY, and the
    // target rolls the part back (and releases its claim), so the resume copies it again from the start.
    const abort = () => {
      void source.end().catch(() => undefined);
      void target.end().catch(() => undefined);
    };
    ctx.stopSignal.addEventListener('abort', abort, { once: true });
    try {
      await setCanonicalSession(source);
      await setCanonicalSession(target);
      if (input.skipSchema) {
        // Existing triggers and foreign keys must not fire for copied rows (needs superuser or similar).
        await target.query('SET session_replication_role = replica').catch((error) => {
          ctx.emit({
            type: 'log',
            level: 'warn',
            message: `Triggers and foreign keys stay active during the copy: ${(error as Error).message}`,
          });
        });
      }
      await beginInSnapshot(source, input.snapshotName);
      while (!failure && !ctx.stopSignal.aborted) {
        const part = await claimPart(target, input.migrationId);
        if (!part) {
          // Nothing to claim: done, unless parts are still being copied elsewhere (wait for them: if
          // their runner dies, its claim is released and this worker takes the part over).
          if (input.partsOnly || (await countPartsLeft(target, input.migrationId)) === 0) break;
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        const table = displayName(part);
        ctx.emit({
          type: 'copy:part:start',
          partId: part.partId,
          table,
          partIndex: part.partIndex,
          partCount: part.partCount,
          estBytes: part.estBytes,
        });
        const columns = input.columnsByTable.get(tableKey(part));
        if (!columns) {
          throw new MigrationError(
            'COPY_FAILED',
            `Table ${table} is in the copy plan but no longer in the snapshot's catalog.`,
            'The plan on the target does not match this snapshot; clean the migration and start again.',
          );
        }
        const chunkTarget = input.chunkTargets.get(tableKey(part));
        if (
          chunkTarget &&
          !(await source.query('SELECT to_regclass($1) AS r', [quoteQualified(part)])).rows[0].r
        ) {
          // A chunk that retention (or drop_chunks) removed on the source since the snapshot: nothing to copy,
          // and nothing of it on the target either (the cutover drops what the source dropped).
          await markPartDone(target, input.migrationId, part.partId, { rows: 0, bytes: 0, seconds: 0 });
          await target.query('COMMIT');
          ctx.emit({
            type: 'log',
            level: 'info',
            message: `${table} was dropped on the source since the snapshot (retention): nothing to copy.`,
          });
          copied += 1;
          continue;
        }
        const result = await copyPart({
          source,
          target,
          migrationId: input.migrationId,
          part,
          columns,
          into: chunkTarget?.hypertable,
          compressOrder: chunkTarget?.compressOrder,
          inTransaction: true,
          nowMs: () => ctx.clock.nowMs(),
          onBytes: (b) => ctx.emit({ type: 'copy:part:progress', partId: part.partId, bytes: b }),
        });
        rows += result.rows;
        bytes += result.bytes;
        copied += 1;
        ctx.emit({ type: 'copy:part:done', partId: part.partId, table, ...result });
        if ((await countPartsLeft(target, input.migrationId, part)) === 0)
          input.onTableCopied?.(tableKey(part));
      }
    } catch (error) {
      if (!ctx.stopSignal.aborted) failure ??= error;
    } finally {
      ctx.stopSignal.removeEventListener('abort', abort);
      await source.end().catch(() => undefined);
      await target.end().catch(() => undefined);
    }
  };
  const todo = input.parts.length - done.length;
  await Promise.all(Array.from({ length: Math.min(input.jobs, Math.max(todo, 1)) }, worker));
  if (failure) throw failure;
  if (ctx.stopSignal.aborted) {
    throw new MigrationError(
      'COPY_INTERRUPTED',
      `The copy was stopped with ${done.length + copied} of ${input.parts.length} parts on the target.`,
      'Run the same command again with --resume: finished parts are kept (a lost snapshot is replaced by a fresh one).',
    );
  }
  return { rows, bytes, copied, skipped: done.length };
}
