// `migrate`: snapshot + copy + replay in one process. While the copy runs, the slot's changes are spooled
// on the target (so the source does not keep the WAL); once the copy is done the spool is applied and the
// replay goes live until a cutover completes. `--resume` continues whatever phase was interrupted.
import { withClient } from '../adapters/postgres/client';
import { ensureControlSchema, Phase, readMigration } from '../adapters/postgres/control-schema';
import type { CopyOptions } from '../config/options';
import { MigrationError } from '../core/errors';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { runCopy } from './copy';
import { type ReplayOutcome, runReplay } from './replay';

export interface MigrateOptions extends CopyOptions {
  lagIntervalMs: number;
  segmentMs?: number;
}

export async function runMigrate(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: MigrateOptions,
): Promise<ReplayOutcome> {
  // The segment counts from here, copy included: a CI job's token and time limit start with the job.
  const startedMs = ctx.clock.nowMs();
  const log = (message: string, level: 'info' | 'warn' = 'info') => ctx.emit({ type: 'log', level, message });
  const migration = await withClient(endpoints.target, async (c) => {
    await ensureControlSchema(c);
    return readMigration(c, options.migrationId);
  });
  if (options.resume && !migration) {
    throw new MigrationError(
      'MIGRATION_NOT_FOUND',
      `The target has no state for migration '${options.migrationId}'.`,
      'Start it without --resume, or check --target and --migration-id.',
    );
  }
  if (migration?.phase === Phase.done) {
    log(`Migration '${options.migrationId}' has already completed.`);
    return { kind: 'cutover-done', endLsn: 'already done' };
  }
  if (!migration?.copyFinishedAt) {
    let copyDone: () => void = () => undefined;
    const until = new Promise<void>((resolve) => {
      copyDone = resolve;
    });
    let spooler: Promise<unknown> | undefined;
    try {
      await runCopy(ctx, endpoints, options, () => {
        // Spool from the moment the slot exists; its failure only costs source WAL retention, so it is
        // reported and the copy goes on (the replay then starts from the last spooled position).
        spooler = runReplay(ctx, endpoints, {
          migrationId: options.migrationId,
          mode: 'spool',
          lagIntervalMs: options.lagIntervalMs,
          until,
        }).catch((error: Error) =>
          log(`Spooling changes during the copy stopped: ${ctx.redactor.redact(error.message)}`, 'warn'),
        );
      });
    } finally {
      copyDone();
      await spooler;
    }
  }
  if (ctx.stopSignal.aborted) return { kind: 'stopped' };
  return runReplay(ctx, endpoints, {
    migrationId: options.migrationId,
    mode: 'apply',
    lagIntervalMs: options.lagIntervalMs,
    ...(options.segmentMs !== undefined
      ? { segmentMs: Math.max(0, options.segmentMs - (ctx.clock.nowMs() - startedMs)) }
      : {}),
  });
}
