// `clean [--prune]`: removes everything this migration created (slot, publications, target state) and,
// with --prune, its work folder except logs. Idempotent; never touches user data.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { restoreAltered } from '../adapters/postgres/apply-session';
import { withClient } from '../adapters/postgres/client';
import {
  controlSchemaExists,
  dropControlState,
  ensureControlSchema,
  readMigration,
} from '../adapters/postgres/control-schema';
import { dropPublications, dropSlot, readSlot, slotNameFor } from '../adapters/postgres/replication-slot';
import type { CleanOptions } from '../config/options';
import { MigrationError } from '../core/errors';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';

export interface CleanResult {
  slotDropped: boolean;
  publicationsDropped: string[];
  targetRowsDeleted: number;
  targetSchemaDropped: boolean;
  pruned: string[];
}

export async function runClean(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: CleanOptions,
): Promise<CleanResult> {
  const slotName = slotNameFor(options.migrationId);
  const say = (message: string) => ctx.emit({ type: 'log', level: 'info', message });
  // The snapshot holder (a `snapshot` process) is a walsender that does not hold the slot itself; it
  // is ours, recorded on the target, and would keep the exported snapshot alive: end it too.
  const holderPid = await withClient(
    endpoints.target,
    async (c) => (await readMigration(c, options.migrationId))?.snapshotHolderPid ?? null,
  );
  const { slotDropped, publicationsDropped } = await withClient(endpoints.source, async (c) => {
    if (holderPid !== null) {
      const { rowCount } = await c.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid = $1 AND backend_type = 'walsender' AND application_name = 'pg-live-migrate'`,
        [holderPid],
      );
      if (rowCount) say(`Ended the process holding the exported snapshot (source backend ${holderPid}).`);
    }
    const dropped = await dropSlot(c, slotName);
    const pubs = await dropPublications(c, options.migrationId);
    if (await readSlot(c, slotName)) {
      throw new MigrationError(
        'SLOT_IN_USE',
        `Replication slot '${slotName}' still exists after clean.`,
        'Stop any process replaying this migration and run clean again.',
      );
    }
    return { slotDropped: dropped, publicationsDropped: pubs };
  });
  say(
    slotDropped ? `Dropped replication slot ${slotName}.` : `No replication slot ${slotName} on the source.`,
  );
  say(
    publicationsDropped.length
      ? `Dropped publications ${publicationsDropped.join(', ')}.`
      : 'No publications of this migration on the source.',
  );
  const target = await withClient(endpoints.target, async (c) => {
    // An abandoned replay may have disabled triggers or relaxed identity columns: put them back first.
    if (await controlSchemaExists(c)) {
      await ensureControlSchema(c);
      const restored = await restoreAltered(c, options.migrationId);
      if (restored)
        say(`Restored ${restored} target objects the replay had changed (triggers, identity columns).`);
    }
    return dropControlState(c, options.migrationId);
  });
  say(
    target.rows
      ? `Deleted ${target.rows} state rows of '${options.migrationId}' on the target${target.schemaDropped ? ' and dropped schema _pg_live_migrate' : ''}.`
      : `No state of '${options.migrationId}' on the target${target.schemaDropped ? '; dropped the empty schema _pg_live_migrate' : ''}.`,
  );
  const pruned: string[] = [];
  if (options.prune) {
    const entries = await readdir(options.dir).catch(() => [] as string[]);
    for (const entry of entries) {
      if (entry === 'logs') continue;
      await rm(join(options.dir, entry), { recursive: true, force: true });
      pruned.push(join(options.dir, entry));
    }
    say(
      pruned.length
        ? `Pruned ${pruned.length} entries of ${options.dir} (kept logs/).`
        : `Nothing to prune in ${options.dir}.`,
    );
  }
  return {
    slotDropped,
    publicationsDropped,
    targetRowsDeleted: target.rows,
    targetSchemaDropped: target.schemaDropped,
    pruned,
  };
}
