// `cutover`: asks the running replay (through a request row on the target, so it works from any machine,
// the Action or the bot) to drain to the source's current position and finish; waits for the outcome.
import type pg from 'pg';
import { withClient } from '../adapters/postgres/client';
import {
  CONTROL_SCHEMA,
  ensureControlSchema,
  Phase,
  readMigration,
} from '../adapters/postgres/control-schema';
import { MigrationError } from '../core/errors';
import { formatBytes, formatDuration } from '../core/format';
import { quoteIdent } from '../core/sql';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import type { CutoverRequest } from './cutover-steps';

const S = quoteIdent(CONTROL_SCHEMA);

/** A replay that has not written its heartbeat for this long is taken as not running. */
export const REPLAY_ALIVE_MS = 30_000;

export interface CutoverOptions {
  migrationId: string;
  maxLag: { bytes: number } | { seconds: number };
  timeoutMs: number;
  fenceRoles: string[];
  force: boolean;
  checksum: boolean;
  pollMs?: number;
}

export type CutoverParams = Omit<CutoverRequest, 'id'>;

export function buildCutoverParams(o: Omit<CutoverOptions, 'migrationId' | 'pollMs'>): CutoverParams {
  return {
    ...('bytes' in o.maxLag ? { maxLagBytes: o.maxLag.bytes } : { maxLagSeconds: o.maxLag.seconds }),
    timeoutMs: o.timeoutMs,
    fenceRoles: o.fenceRoles,
    force: o.force,
    checksum: o.checksum,
  };
}

export async function insertCutoverRequest(
  client: pg.Client,
  migrationId: string,
  params: CutoverParams,
): Promise<number> {
  const { rows } = await client.query(
    `INSERT INTO ${S}.request (migration_id, kind, params) VALUES ($1, 'cutover', $2) RETURNING id`,
    [migrationId, JSON.stringify(params)],
  );
  return Number(rows[0].id);
}

export async function runCutover(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  o: CutoverOptions,
): Promise<{ endLsn: string; seconds: number }> {
  const say = (message: string) => ctx.emit({ type: 'log', level: 'info', message });
  return withClient(endpoints.target, async (c) => {
    await ensureControlSchema(c);
    const migration = await readMigration(c, o.migrationId);
    if (!migration) {
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        `The target has no state for migration '${o.migrationId}'.`,
        'Check --target and --migration-id.',
      );
    }
    if (migration.phase === Phase.done) {
      say(`Migration '${o.migrationId}' has already completed its cutover.`);
      return { endLsn: '', seconds: 0 };
    }
    const { rows } = await c.query(
      `SELECT lag_bytes, lag_seconds, extract(epoch FROM now() - heartbeat_at) * 1000 AS age_ms FROM ${S}.replay WHERE migration_id = $1`,
      [o.migrationId],
    );
    const status = rows[0];
    if (!status || status.age_ms === null || Number(status.age_ms) > REPLAY_ALIVE_MS) {
      throw new MigrationError(
        'REPLAY_NOT_RUNNING',
        `No replay of '${o.migrationId}' is running (last heartbeat: ${status?.age_ms == null ? 'never' : `${formatDuration(Number(status.age_ms))} ago`}).`,
        `Start it with 'pg-live-migrate replay' (or 'migrate --resume'), wait until it has caught up, then ask for the cutover again.`,
      );
    }
    if (!o.force) {
      const lagBytes = Number(status.lag_bytes ?? Number.POSITIVE_INFINITY);
      const lagSeconds = Number(status.lag_seconds ?? Number.POSITIVE_INFINITY);
      const over = 'bytes' in o.maxLag ? lagBytes > o.maxLag.bytes : lagSeconds > o.maxLag.seconds;
      if (over) {
        throw new MigrationError(
          'CUTOVER_LAG_TOO_HIGH',
          `Replay lag is ${formatBytes(lagBytes)} (${lagSeconds.toFixed(1)} s), above --max-lag ${'bytes' in o.maxLag ? formatBytes(o.maxLag.bytes) : `${o.maxLag.seconds} s`}.`,
          'Wait until the replay has caught up (pg-live-migrate status), raise --max-lag, or pass --force to drain whatever the lag.',
        );
      }
    }
    const requestId = await insertCutoverRequest(c, o.migrationId, buildCutoverParams(o));
    say(`Cutover requested (request ${requestId}); waiting for the replay to drain and finish …`);
    const deadline = ctx.clock.nowMs() + o.timeoutMs + 60_000;
    for (;;) {
      await new Promise((r) => setTimeout(r, o.pollMs ?? 500));
      const { rows: r } = await c.query(`SELECT state, result FROM ${S}.request WHERE id = $1`, [requestId]);
      const state = r[0]?.state as string | undefined;
      const result = (r[0]?.result ?? {}) as {
        code?: string;
        message?: string;
        endLsn?: string;
        seconds?: number;
      };
      if (state === 'done') {
        say(`Cutover completed at ${result.endLsn} in ${formatDuration((result.seconds ?? 0) * 1000)}.`);
        say('Migration successfully completed');
        return { endLsn: result.endLsn ?? '', seconds: result.seconds ?? 0 };
      }
      if (state === 'failed') {
        const code =
          result.code && result.code in codesByName
            ? (result.code as keyof typeof codesByName)
            : 'CUTOVER_FAILED';
        throw new MigrationError(
          codesByName[code],
          `Cutover failed: ${result.message ?? 'no reason recorded'}`,
          'The source was unfenced. Fix the cause; if the replay process ended, start it again (replay --resume); then ask for the cutover again.',
        );
      }
      if (ctx.clock.nowMs() > deadline || ctx.stopSignal.aborted) {
        await c.query(
          `UPDATE ${S}.request SET state = 'failed', result = $2 WHERE id = $1 AND state = 'pending'`,
          [
            requestId,
            JSON.stringify({ code: 'CUTOVER_TIMEOUT', message: 'the cutover command gave up waiting' }),
          ],
        );
        throw new MigrationError(
          'CUTOVER_TIMEOUT',
          `The replay did not finish the cutover within ${formatDuration(o.timeoutMs)}.`,
          'Check the replay process and its log; ask again when it has caught up.',
        );
      }
    }
  });
}

const codesByName = {
  CUTOVER_LAG_TOO_HIGH: 'CUTOVER_LAG_TOO_HIGH',
  CUTOVER_TIMEOUT: 'CUTOVER_TIMEOUT',
  CUTOVER_FAILED: 'CUTOVER_FAILED',
  VALIDATION_MISMATCH: 'VALIDATION_MISMATCH',
} as const;
