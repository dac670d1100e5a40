// `snapshot`: creates the publications and the slot with an exported snapshot, records them on the
// target, and holds the snapshot open until the copy that imports it has finished (or until stopped).
import type pg from 'pg';
import { openClient, translatePgError, withClient } from '../adapters/postgres/client';
import type { ConnInfo } from '../adapters/postgres/connection';
import {
  ensureControlSchema,
  insertMigration,
  Phase,
  readMigration,
  updateMigration,
} from '../adapters/postgres/control-schema';
import {
  createPublications,
  createSlotWithSnapshot,
  dropPublications,
  readSlot,
  type SnapshotHolder,
  slotNameFor,
} from '../adapters/postgres/replication-slot';
import { EXCLUDED_SCHEMAS, listTables } from '../adapters/postgres/source-catalog';
import { readTimescaleLayout } from '../adapters/postgres/timescaledb';
import type { CommonOptions } from '../config/options';
import { MigrationError } from '../core/errors';
import { quoteIdent } from '../core/sql';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { assertSourceReadyForSnapshot } from './preflight';

/** Refuses to start over a target that already has user tables in the schemas to migrate. */
export async function assertTargetEmpty(target: pg.Client, schemas: string[] | null): Promise<void> {
  const { rows } = await target.query(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_%'
        AND ($2::text[] IS NULL OR n.nspname = ANY($2::text[]))
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1, 2 LIMIT 5`,
    [EXCLUDED_SCHEMAS, schemas],
  );
  if (rows.length > 0) {
    const names = rows.map((r) => `${quoteIdent(r.schema)}.${quoteIdent(r.name)}`).join(', ');
    throw new MigrationError(
      'TARGET_NOT_EMPTY',
      `The target already has user tables in the schemas to migrate (${names}${rows.length === 5 ? ', …' : ''}).`,
      'Point --target at an empty database, drop those tables, or use --skip-schema to copy into an existing schema whose tables are empty.',
      { details: { tables: rows.map((r) => `${r.schema}.${r.name}`) } },
    );
  }
}

export interface StartedSnapshot {
  holder: SnapshotHolder;
  publications: string[];
}

/**
 * Creates publications, then the slot and its exported snapshot, and records them on the target.
 * On any failure it removes what it created on the source, so a retry starts clean.
 */
export async function startSnapshot(
  endpoints: Endpoints,
  options: Pick<CommonOptions, 'migrationId' | 'schemas'> & { phase: Phase },
): Promise<StartedSnapshot> {
  const slotName = slotNameFor(options.migrationId);
  return withClient(endpoints.source, async (source) => {
    const existing = await readSlot(source, slotName);
    if (existing) {
      throw new MigrationError(
        'SLOT_ALREADY_EXISTS',
        `Replication slot '${slotName}' already exists on the source (active pid: ${existing.activePid ?? 'none'}).`,
        `Resume that migration with --resume, remove it with 'pg-live-migrate clean --migration-id ${options.migrationId}', or choose another --migration-id.`,
      );
    }
    // Refuse before creating anything: wal_level, a free slot and WAL sender, the privileges (as preflight).
    await assertSourceReadyForSnapshot(source, options);
    const tables = await listTables(source, options.schemas);
    await dropPublications(source, options.migrationId);
    let publications: string[];
    try {
      const layout = await readTimescaleLayout(source, options.schemas);
      const superuser = (await source.query('SELECT rolsuper FROM pg_roles WHERE rolname = current_user'))
        .rows[0]?.rolsuper as boolean;
      publications = await createPublications(
        source,
        options.migrationId,
        tables,
        layout?.hypertables.length ? { chunkSchemas: layout.chunkSchemas, superuser } : null,
      );
    } catch (error) {
      await dropPublications(source, options.migrationId).catch(() => undefined);
      throw translatePgError(error, endpoints.source);
    }
    let holder: SnapshotHolder | undefined;
    try {
      holder = await createSlotWithSnapshot(endpoints.source, slotName);
      const h = holder;
      await withClient(endpoints.target, async (target) => {
        await ensureControlSchema(target);
        const row = await readMigration(target, options.migrationId);
        const fields = {
          snapshotName: h.snapshotName,
          snapshotHolderPid: h.backendPid,
        };
        if (row) {
          await updateMigration(target, options.migrationId, { ...fields, phase: options.phase });
          await target.query(
            `UPDATE _pg_live_migrate.migration SET consistent_lsn = $2::pg_lsn, publications = $3 WHERE migration_id = $1`,
            [options.migrationId, h.consistentLsn, publications],
          );
        } else {
          await insertMigration(target, {
            migrationId: options.migrationId,
            phase: options.phase,
            slotName,
            publications,
            consistentLsn: h.consistentLsn,
            schemas: options.schemas,
            ...fields,
          });
        }
      });
      return { holder: h, publications };
    } catch (error) {
      await holder?.close();
      await source
        .query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1', [
          slotName,
        ])
        .catch(() => undefined);
      await dropPublications(source, options.migrationId).catch(() => undefined);
      throw error;
    }
  });
}

/** The `snapshot` command: start, print, then hold until the copy finishes or we are stopped. */
export async function runSnapshot(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: CommonOptions & { hold: boolean; pollMs?: number },
): Promise<{
  snapshotName: string;
  consistentLsn: string;
  released: 'copy-finished' | 'stopped' | 'connection-lost';
}> {
  const target = await openClient(endpoints.target);
  try {
    await ensureControlSchema(target);
    const row = await readMigration(target, options.migrationId);
    if (row?.copyFinishedAt) {
      throw new MigrationError(
        'SLOT_ALREADY_EXISTS',
        `Migration '${options.migrationId}' has already finished its copy; a new snapshot would not match the target.`,
        `Run 'pg-live-migrate clean --migration-id ${options.migrationId}' first to start over.`,
      );
    }
    const { holder } = await startSnapshot(endpoints, { ...options, phase: Phase.snapshot });
    ctx.emit({
      type: 'snapshot:ready',
      snapshotName: holder.snapshotName,
      consistentLsn: holder.consistentLsn,
      slotName: holder.slotName,
    });
    ctx.emit({
      type: 'log',
      level: 'info',
      message: `Exported snapshot ${holder.snapshotName} at consistent point ${holder.consistentLsn} (slot ${holder.slotName}).`,
    });
    ctx.emit({
      type: 'log',
      level: 'info',
      message: options.hold
        ? 'Holding the snapshot until this process is stopped (Ctrl-C).'
        : "Holding the snapshot until the copy that uses it has finished. Run 'pg-live-migrate copy' now.",
    });
    let released: 'copy-finished' | 'stopped' | 'connection-lost' = 'stopped';
    let lost = false;
    void holder.ended.then(() => {
      lost = true;
    });
    const pollMs = options.pollMs ?? 1000;
    while (!ctx.stopSignal.aborted && !lost) {
      await new Promise((r) => setTimeout(r, pollMs));
      if (!options.hold) {
        const current = await readMigration(target, options.migrationId);
        if (current?.copyFinishedAt) {
          released = 'copy-finished';
          break;
        }
      }
    }
    if (lost) released = 'connection-lost';
    await holder.close();
    return { snapshotName: holder.snapshotName, consistentLsn: holder.consistentLsn, released };
  } finally {
    await target.end().catch(() => undefined);
  }
}

export type { ConnInfo };
