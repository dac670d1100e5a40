// The cutover's steps on both databases: fencing writers on the source, and after the drain, sequences,
// materialized views, restored triggers, validation and the final record.
import type pg from 'pg';
import { restoreAltered } from '../adapters/postgres/apply-session';
import { withClient } from '../adapters/postgres/client';
import { CONTROL_SCHEMA, Phase, updateMigration } from '../adapters/postgres/control-schema';
import { listMaterializedViews, readSequences } from '../adapters/postgres/source-catalog';
import {
  chunkCopies,
  chunkRangeStarts,
  dropChunksGoneFromSource,
  readLateChunks,
  readTimescaleLayout,
  recopyChunks,
  refreshContinuousAggregates,
  resumeJobsLikeSource,
  TouchedRanges,
} from '../adapters/postgres/timescaledb';
import { MigrationError } from '../core/errors';
import { formatDuration } from '../core/format';
import { tableKey } from '../core/plan';
import { type QualifiedName, quoteIdent, quoteQualified } from '../core/sql';
import type { ValidationReport } from '../core/validation';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { runValidate } from './validate';
import { renderValidationText } from './validate-render';

const S = quoteIdent(CONTROL_SCHEMA);

export interface CutoverRequest {
  id: number;
  maxLagBytes?: number;
  maxLagSeconds?: number;
  timeoutMs: number;
  fenceRoles?: string[];
  force?: boolean;
  checksum?: boolean;
}

/** Makes the roles read-only by default and ends their sessions on the source database. */
export async function fenceRoles(source: pg.Client, roles: string[]): Promise<string[]> {
  for (const role of roles) {
    await source.query(`ALTER ROLE ${quoteIdent(role)} SET default_transaction_read_only = on`);
  }
  if (roles.length) {
    await source.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
      [roles],
    );
  }
  return roles;
}

export async function unfenceRoles(source: pg.Client, roles: string[]): Promise<void> {
  for (const role of roles) {
    await source
      .query(`ALTER ROLE ${quoteIdent(role)} RESET default_transaction_read_only`)
      .catch(() => undefined);
  }
}

export interface CutoverResult {
  endLsn: string;
  seconds: number;
  validation: ValidationReport;
}

/** Everything after the drain. On failure the request is marked failed and roles are unfenced. */
export async function runCutoverFinish(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  input: {
    migrationId: string;
    request: CutoverRequest;
    endLsn: string;
    writesAfterEnd: boolean;
    startedMs: number;
  },
): Promise<CutoverResult> {
  const id = input.migrationId;
  const step = (name: string, detail?: string) =>
    ctx.emit({
      type: 'cutover:step',
      step: name,
      ...(detail ? { detail } : {}),
      seconds: (ctx.clock.nowMs() - input.startedMs) / 1000,
    });
  try {
    const schemas = await withClient(endpoints.target, async (c) => {
      const { rows } = await c.query(`SELECT schemas FROM ${S}.migration WHERE migration_id = $1`, [id]);
      return (rows[0]?.schemas as string[] | null) ?? null;
    });
    // Every sequence, owned by a column or not, at the source's current value.
    const sequences = await withClient(endpoints.source, (c) => readSequences(c, schemas));
    const views = await withClient(endpoints.source, (c) => listMaterializedViews(c, schemas));
    await withClient(endpoints.target, async (c) => {
      await c.query('BEGIN');
      for (const seq of sequences) {
        if (seq.lastValue === null) continue;
        await c.query('SELECT pg_catalog.setval($1::regclass, $2::bigint, $3)', [
          quoteQualified(seq),
          seq.lastValue,
          seq.isCalled,
        ]);
      }
      await c.query('COMMIT');
      step('sequences', `${sequences.length} set`);
      const restored = await restoreAltered(c, id);
      if (restored) step('triggers', `${restored} restored`);
      for (const view of views) await c.query(`REFRESH MATERIALIZED VIEW ${quoteQualified(view)}`);
      step('materialized views', `${views.length} refreshed`);
    });
    // TimescaleDB: what logical decoding does not carry (dropped chunks, DML on compressed batches, updates
    // of chunks created during the migration) is settled here, with the writers stopped.
    const timescale = await withClient(endpoints.source, (c) => readTimescaleLayout(c, schemas));
    /** Chunks copied again here: their aggregates' buckets are refreshed from their start. */
    const recopied: QualifiedName[] = [];
    /** Chunks created during the migration whose early updates may not have been published. */
    const lateToCompare = new Set<string>();
    // Copying chunks from the source as it is now is only right while it is quiet: with writes after the end
    // position, a retried cutover would replay them onto chunks that already hold them.
    const settle = Boolean(timescale?.hypertables.length) && !input.writesAfterEnd;
    if (timescale?.hypertables.length && input.writesAfterEnd) {
      ctx.emit({
        type: 'log',
        level: 'warn',
        message:
          'The source received writes after the end position: TimescaleDB chunks are not dropped or copied again at this cutover. Fence the writers (--fence-roles) and cut over again.',
      });
    }
    if (timescale && settle) {
      await withClient(endpoints.source, (source) =>
        withClient(endpoints.target, async (target) => {
          const gone = await dropChunksGoneFromSource(source, target, timescale);
          if (gone.length)
            step('dropped chunks', `${gone.length} chunks dropped on the source during the migration`);
          // Published only after their first rows (no superuser): copied again whatever they hold.
          const late = await readLateChunks(target, id);
          const unpublishedStart = late.filter((c) => c.recopy);
          if (unpublishedStart.length) {
            await recopyChunks(source, target, await chunkCopies(source, schemas, unpublishedStart));
            recopied.push(...unpublishedStart);
            step(
              'late chunks',
              `${unpublishedStart.length} chunks created during the migration, copied again`,
            );
          }
          // Published from their first row, their updates only from when the replay met them: compared by
          // contents below, and copied again if they differ.
          for (const c of late) if (!c.recopy) lateToCompare.add(tableKey(c));
        }),
      );
    }
    const validateNow = () =>
      runValidate(ctx, endpoints, {
        migrationId: id,
        source: undefined,
        target: undefined,
        dir: '',
        json: false,
        pgBindir: undefined,
        schemas,
        checksum: input.request.checksum ?? false,
        markdown: undefined,
        buckets: 16,
        repair: false,
        checksumKeylessChunks: true,
        checksumChunks: lateToCompare,
        liveNote: input.writesAfterEnd
          ? 'Validating after the drain; the source received writes after the end position, so differences are expected.'
          : 'Validating after the drain: the source is compared as it is now (fence writers with --fence-roles so it stays quiet).',
      });
    let validation = await validateNow();
    if (!validation.ok && settle) {
      // Chunks that differ are copied again (the writers are stopped) and everything compared once more.
      const differing = validation.tables.filter((t) => !t.ok);
      const chunks = await withClient(endpoints.source, (source) => chunkCopies(source, schemas, differing));
      if (chunks.length > 0) {
        ctx.emit({
          type: 'log',
          level: 'warn',
          message: `${chunks.length} TimescaleDB chunks differ after the drain (changes logical decoding does not carry, e.g. deletes of whole compressed batches): copying them again.`,
        });
        await withClient(endpoints.source, (source) =>
          withClient(endpoints.target, (target) => recopyChunks(source, target, chunks)),
        );
        recopied.push(...chunks.map((c) => c.chunk));
        const late = chunks.filter((c) => lateToCompare.has(tableKey(c.chunk)));
        const others = chunks.filter((c) => !lateToCompare.has(tableKey(c.chunk)));
        if (late.length)
          step(
            'late chunks',
            `${late.length} chunks created during the migration and updated before they were published, copied again`,
          );
        if (others.length)
          step('chunks re-copied', others.map((c) => `${c.chunk.schema}.${c.chunk.name}`).join(', '));
        validation = await validateNow();
      }
    }
    if (validation.ok && timescale) {
      await withClient(endpoints.source, (source) =>
        withClient(endpoints.target, async (target) => {
          // Only from the earliest time the replay (or a chunk copied again) reached: the copy refreshed the rest.
          const touched = new TouchedRanges(timescale);
          await touched.load(target, id);
          for (const r of await chunkRangeStarts(source, recopied))
            touched.lowerTo(r.hypertable, r.start, touched.isInteger(r.hypertable));
          const refreshed = await refreshContinuousAggregates(target, timescale, touched);
          if (refreshed) step('continuous aggregates', `${refreshed} refreshed`);
          const jobs = await resumeJobsLikeSource(source, target, id, timescale);
          if (jobs.resumed + jobs.paused + jobs.goneOnSource.length > 0)
            step(
              'jobs',
              `${jobs.resumed} scheduled, ${jobs.paused} paused as on the source${jobs.goneOnSource.length ? `, ${jobs.goneOnSource.length} removed on the source since (left paused: jobs ${jobs.goneOnSource.join(', ')})` : ''}`,
            );
        }),
      );
    }
    ctx.emit({ type: 'validation:done', report: validation });
    ctx.emit({ type: 'log', level: 'info', message: `\n${renderValidationText(validation)}` });
    step('validation', validation.ok ? 'source and target match' : 'MISMATCH');
    const seconds = (ctx.clock.nowMs() - input.startedMs) / 1000;
    await withClient(endpoints.target, async (c) => {
      const result = {
        endLsn: input.endLsn,
        seconds,
        validationOk: validation.ok,
        writesAfterEnd: input.writesAfterEnd,
      };
      if (!validation.ok) {
        await c.query(
          `UPDATE ${S}.request SET state = 'failed', result = $2, updated_at = now() WHERE id = $1`,
          [
            input.request.id,
            JSON.stringify({
              ...result,
              code: 'VALIDATION_MISMATCH',
              message: 'Validation after the drain found differences.',
            }),
          ],
        );
        return;
      }
      await updateMigration(c, id, { phase: Phase.done, error: null });
      await c.query(`UPDATE ${S}.request SET state = 'done', result = $2, updated_at = now() WHERE id = $1`, [
        input.request.id,
        JSON.stringify(result),
      ]);
    });
    if (!validation.ok) {
      throw new MigrationError(
        'VALIDATION_MISMATCH',
        `After draining to ${input.endLsn}, validation found differences${input.writesAfterEnd ? ' (the source received writes after the end position)' : ''}.`,
        'Look at the report above. Fix the differences (or fence every writer and cut over again with replay --resume), then validate again.',
      );
    }
    ctx.emit({ type: 'cutover:done', seconds, endLsn: input.endLsn });
    ctx.emit({
      type: 'log',
      level: 'info',
      message: `Cutover finished in ${formatDuration(seconds * 1000)} at ${input.endLsn}.`,
    });
    ctx.emit({ type: 'log', level: 'info', message: 'Migration successfully completed' });
    return { endLsn: input.endLsn, seconds, validation };
  } catch (error) {
    await withClient(endpoints.source, (c) => unfenceRoles(c, input.request.fenceRoles ?? [])).catch(
      () => undefined,
    );
    await withClient(endpoints.target, (c) =>
      c.query(
        `UPDATE ${S}.request SET state = 'failed', result = coalesce(result, $2), updated_at = now() WHERE id = $1`,
        [
          input.request.id,
          JSON.stringify({
            code: (error as { code?: string }).code ?? 'CUTOVER_FAILED',
            message: (error as Error).message,
          }),
        ],
      ),
    ).catch(() => undefined);
    throw error;
  }
}
