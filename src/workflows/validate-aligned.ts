// `validate` while a replay runs: compare both sides at one source position X. A temporary slot exports a
// source snapshot at exactly X; the replay is asked to pause once everything before X is applied (and
// nothing after); the source is read in the snapshot, the target as it stands; then the replay goes on.
import { withClient } from '../adapters/postgres/client';
import {
  CONTROL_SCHEMA,
  ensureControlSchema,
  Phase,
  readMigration,
} from '../adapters/postgres/control-schema';
import { createTemporarySnapshot, slotNameFor } from '../adapters/postgres/replication-slot';
import type { ValidateOptions } from '../config/options';
import { MigrationError } from '../core/errors';
import { formatDuration } from '../core/format';
import { quoteIdent } from '../core/sql';
import type { ValidationReport } from '../core/validation';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { REPLAY_ALIVE_MS } from './cutover';
import { repairDifferingChunks, runValidate, type ValidateTuning } from './validate';

const S = quoteIdent(CONTROL_SCHEMA);

/** Validates at an aligned position when a replay is running, otherwise as before (snapshot or live). */
export async function runValidateCommand(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: ValidateOptions & ValidateTuning & { pauseTimeoutMs?: number },
): Promise<ValidationReport> {
  const running = await withClient(endpoints.target, async (c) => {
    await ensureControlSchema(c);
    const migration = await readMigration(c, options.migrationId);
    if (migration?.phase !== Phase.replay) return false;
    const { rows } = await c.query(
      `SELECT extract(epoch FROM now() - heartbeat_at) * 1000 AS age_ms FROM ${S}.replay WHERE migration_id = $1`,
      [options.migrationId],
    );
    return (
      rows[0]?.age_ms !== null && rows[0]?.age_ms !== undefined && Number(rows[0].age_ms) < REPLAY_ALIVE_MS
    );
  });
  if (options.repair) {
    if (running) {
      throw new MigrationError(
        'REPLAY_RUNNING',
        `The replay of '${options.migrationId}' is running: chunks copied again now would be changed twice by it.`,
        'Let the cutover settle differing chunks (it copies them again with the writers stopped), or stop the replay and the writers first.',
      );
    }
    return repairDifferingChunks(ctx, endpoints, options, await runValidate(ctx, endpoints, options));
  }
  if (!running) return runValidate(ctx, endpoints, options);

  const timeoutMs = options.pauseTimeoutMs ?? 5 * 60_000;
  const started = ctx.clock.nowMs();
  const waitFor = async <T>(what: string, check: () => Promise<T | undefined>): Promise<T> => {
    for (;;) {
      const value = await check();
      if (value !== undefined) return value;
      if (ctx.clock.nowMs() - started > timeoutMs || ctx.stopSignal.aborted) {
        throw new MigrationError(
          'REPLAY_NOT_RUNNING',
          `The replay did not ${what} within ${formatDuration(timeoutMs)}.`,
          'Check the replay process (pg-live-migrate status); run validate again once it has caught up.',
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  let requestId: number | undefined;
  let holder: Awaited<ReturnType<typeof createTemporarySnapshot>> | undefined;
  try {
    // 1. The replay stops applying; 2. we take the source snapshot at X; 3. it applies up to X and holds.
    requestId = await withClient(endpoints.target, async (c) => {
      const { rows } = await c.query(
        `INSERT INTO ${S}.request (migration_id, kind, params) VALUES ($1, 'pause', $2) RETURNING id`,
        [options.migrationId, JSON.stringify({ timeoutMs: timeoutMs + 10 * 60_000 })],
      );
      return Number(rows[0].id);
    });
    const id = requestId;
    await withClient(endpoints.target, (c) =>
      waitFor('pause', async () => {
        const { rows } = await c.query(`SELECT result FROM ${S}.request WHERE id = $1`, [id]);
        return rows[0]?.result?.stage === 'held' ? true : undefined;
      }),
    );
    holder = await createTemporarySnapshot(endpoints.source, `${slotNameFor(options.migrationId)}_val`);
    const at = holder.consistentLsn;
    ctx.emit({ type: 'log', level: 'info', message: `Replay held; comparing at source position ${at} …` });
    await withClient(endpoints.target, async (c) => {
      await c.query(`UPDATE ${S}.request SET params = params || $2::jsonb WHERE id = $1`, [
        id,
        JSON.stringify({ at }),
      ]);
      await waitFor(`reach ${at}`, async () => {
        const { rows } = await c.query(
          `SELECT paused_at::text AS p FROM ${S}.replay WHERE migration_id = $1`,
          [options.migrationId],
        );
        return rows[0]?.p === at ? true : undefined;
      });
    });
    ctx.emit({
      type: 'log',
      level: 'info',
      message: `Replay paused at ${at} after ${formatDuration(ctx.clock.nowMs() - started)}.`,
    });
    return await runValidate(ctx, endpoints, {
      ...options,
      alignedSnapshot: { name: holder.snapshotName, lsn: at },
    });
  } finally {
    if (requestId !== undefined) {
      const id = requestId;
      await withClient(endpoints.target, (c) =>
        c.query(`UPDATE ${S}.request SET state = 'done', updated_at = now() WHERE id = $1`, [id]),
      ).catch(() => undefined);
    }
    await holder?.close();
  }
}
