// Live replay: streams the slot's changes and applies them on the target, or spools them there while the
// copy runs. Promises kept here:
//  - nothing lost: the source is acknowledged only up to a position committed on the target, and that
//    position is written in the same target transaction as the changes it covers;
//  - exactly once: a restarted session starts from the recorded position and skips every transaction
//    whose commit record lies before it;
//  - commit order: source transactions are applied one after another, several small ones grouped into one
//    target transaction; a huge one is sent in batches inside one open target transaction (bounded memory).
// The same loop answers requests written to the target (cutover, pause for validation) by any process.
import type pg from 'pg';
import {
  applyStatements,
  commitGroup,
  describeRelationMismatch,
  disableUserTriggers,
  prepareApplySession,
  readTargetColumns,
  relaxIdentityColumns,
  type TargetColumns,
  type TriggerMode,
} from '../adapters/postgres/apply-session';
import { openClient, withClient } from '../adapters/postgres/client';
import {
  CONTROL_SCHEMA,
  ensureControlSchema,
  type MigrationRow,
  Phase,
  readMigration,
  updateMigration,
} from '../adapters/postgres/control-schema';
import { publicationNameFor, readSlot } from '../adapters/postgres/replication-slot';
import { listTables } from '../adapters/postgres/source-catalog';
import {
  createChunkRouter,
  publishNewChunks,
  readHypertableNames,
  readRecopyChunks,
  readTimescaleLayout,
  recordLateChunks,
  TouchedRanges,
} from '../adapters/postgres/timescaledb';
import { type ChangeStream, openChangeStream } from '../adapters/replication/change-stream';
import { type ApplyStatement, buildApplySql } from '../core/apply-sql';
import { type Change, type RelationDef, type RelationRef, relKey } from '../core/changes';
import { isMigrationError, MigrationError } from '../core/errors';
import { formatBytes, formatDuration } from '../core/format';
import { computeLag, type LagSample } from '../core/lag';
import { formatLsn, type Lsn, parseLsn } from '../core/lsn';
import { isReplicated, tableKey } from '../core/plan';
import { type Reconciled, type RefreshRules, reconcile } from '../core/reconcile';
import { quoteIdent } from '../core/sql';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';
import { type CutoverRequest, fenceRoles, runCutoverFinish, unfenceRoles } from './cutover-steps';

const S = quoteIdent(CONTROL_SCHEMA);
// The source position is read with pg_current_wal_insert_lsn(), not pg_current_wal_lsn(): under
// synchronous_commit = off a committed transaction's commit record can still be beyond the write
// position, and a cutover ending there would leave that transaction out.

/** Changes per batch sent to the target (COPY rows, batched UPDATE/DELETE rows, statements). */
const DEFAULT_BATCH_CHANGES = 5000;
/** A batch is sent once it holds this many bytes of pgoutput, whatever its count: wide rows stay bounded. */
const BATCH_BYTES = 4 * 1024 * 1024;

export interface ReplayOptions {
  migrationId: string;
  /** 'apply': replay on the target tables; 'spool': keep the changes in the control schema (during the copy). */
  mode: 'apply' | 'spool';
  lagIntervalMs: number;
  /** For spool mode: resolves when spooling should stop (the copy is done). */
  until?: Promise<void>;
  /** Changes sent per round trip, and per group before it is committed. */
  batchChanges?: number;
  groupChanges?: number;
  /** Longest a group stays open while more messages are queued. */
  groupMs?: number;
  groupWaitMs?: number;
  /** Give up reconnecting after this long without progress. */
  retryForMs?: number;
  /** Test hook: called after every committed group. */
  onGroupCommitted?: (endLsn: Lsn) => void;
  /**
   * End the replay cleanly after this long (a CI job's lifetime): everything received is committed and
   * acknowledged, and the next run resumes from the target. Not while a cutover or pause is under way.
   */
  segmentMs?: number;
}

export type ReplayOutcome =
  | { kind: 'cutover-done'; endLsn: string }
  | { kind: 'stopped' }
  | { kind: 'segment-ended'; appliedLsn: string };

/** Errors a reconnect can cure: connections lost, servers restarting. Anything else stops the replay. */
/**
 * What a replay failure means for the user: our own errors (a schema change, a row not found) keep their
 * code; a lost connection is retried; anything else is the target refusing a change.
 */
function asReplayError(error: Error, durable: Lsn): Error {
  if (isMigrationError(error)) return error;
  if (isRetryable(error)) {
    return new MigrationError(
      'REPLAY_STREAM_FAILED',
      `The replication stream ended: ${error.message}`,
      'The replay reconnects by itself; if it keeps failing, check the source.',
      { cause: error },
    );
  }
  return new MigrationError(
    'REPLAY_APPLY_FAILED',
    `Applying a replayed transaction on the target failed: ${error.message}`,
    `Nothing of that transaction was applied (applied up to ${formatLsn(durable)}). Fix the cause on the target, then run the same command with --resume.`,
    { cause: error },
  );
}

function isRetryable(error: unknown): boolean {
  if (isMigrationError(error))
    return error.code === 'CONNECTION_FAILED' || error.code === 'REPLAY_STREAM_FAILED';
  const code = (error as { code?: string }).code ?? '';
  const message = error instanceof Error ? error.message : String(error);
  return (
    [
      '57P01',
      '57P02',
      '57P03',
      '08000',
      '08003',
      '08006',
      '08001',
      '08004',
      'ECONNREFUSED',
      'ECONNRESET',
      'EPIPE',
      'ETIMEDOUT',
    ].includes(code) ||
    /Connection terminated|connection.*(closed|ended|lost)|terminating connection|server closed|Client was closed|not queryable|the database system is (starting up|shutting down|in recovery)/i.test(
      message,
    )
  );
}

interface Shared {
  migration: MigrationRow;
  /** Set by a cutover request; survives reconnects. */
  cutover?: { request: CutoverRequest; endLsn: Lsn; startedMs: number; fenced: string[] };
  /** A validation pause: first hold everything (at undefined), then apply up to `at` and hold there. */
  pause?: { requestId: number; at?: Lsn; startedMs: number; timeoutMs: number; held: boolean };
  outcome?: ReplayOutcome;
  lastProgressMs: number;
  startedMs: number;
}

export async function runReplay(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: ReplayOptions,
): Promise<ReplayOutcome> {
  const log = (message: string, level: 'info' | 'warn' = 'info') => ctx.emit({ type: 'log', level, message });
  const migration = await withClient(endpoints.target, async (c) => {
    await ensureControlSchema(c);
    const row = await readMigration(c, options.migrationId);
    if (!row) {
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        `The target has no state for migration '${options.migrationId}'.`,
        'Check --target and --migration-id, or start with migrate.',
      );
    }
    if (options.mode === 'apply' && !row.copyFinishedAt) {
      throw new MigrationError(
        'COPY_NOT_FINISHED',
        `Migration '${options.migrationId}' has not finished its copy (phase ${row.phase}).`,
        `Finish it first: 'pg-live-migrate copy --resume' (or run 'migrate --resume').`,
      );
    }
    await c.query(
      `INSERT INTO ${S}.replay (migration_id, applied_lsn) VALUES ($1, $2::pg_lsn) ON CONFLICT (migration_id) DO NOTHING`,
      [options.migrationId, row.consistentLsn ?? '0/0'],
    );
    // Requests a previous process was working on when it died start over (a cutover fences and drains again).
    await c.query(
      `UPDATE ${S}.request SET state = 'pending', updated_at = now() WHERE migration_id = $1 AND state = 'running'`,
      [options.migrationId],
    );
    if (options.mode === 'apply' && row.phase !== Phase.done) {
      // A resume clears a recorded failure. The phase stays cutover only while a cutover request is to be
      // run again (its process died during it); after a failed cutover the replay simply goes on.
      const { rows: again } = await c.query(
        `SELECT 1 FROM ${S}.request WHERE migration_id = $1 AND kind = 'cutover' AND state = 'pending'`,
        [options.migrationId],
      );
      await updateMigration(c, options.migrationId, {
        phase: again.length ? Phase.cutover : Phase.replay,
        error: null,
      });
    }
    return row;
  });
  if (migration.phase === Phase.done) return { kind: 'cutover-done', endLsn: 'already done' };
  const shared: Shared = { migration, lastProgressMs: ctx.clock.nowMs(), startedMs: ctx.clock.nowMs() };
  const retryForMs = options.retryForMs ?? 10 * 60_000;
  let delayMs = 500;
  /** When the current outage began: retryForMs counts from there, not from the last applied change. */
  let outageSinceMs: number | undefined;
  for (;;) {
    const sessionStartedMs = ctx.clock.nowMs();
    try {
      const outcome = await runSession(ctx, endpoints, options, shared);
      return outcome;
    } catch (error) {
      if (ctx.stopSignal.aborted) return { kind: 'stopped' };
      const now = ctx.clock.nowMs();
      // A session that applied something or stayed up a while was a recovery: this failure starts a new
      // outage, with a short first wait (an idle source must not count as time spent reconnecting).
      if (shared.lastProgressMs > sessionStartedMs || now - sessionStartedMs >= 30_000) {
        outageSinceMs = undefined;
        delayMs = 500;
      }
      outageSinceMs ??= now;
      if (!isRetryable(error) || now - outageSinceMs > retryForMs) {
        await recordFailure(endpoints, options.migrationId, error);
        if (isMigrationError(error)) throw error;
        if (isRetryable(error)) {
          throw new MigrationError(
            'REPLAY_STREAM_FAILED',
            `The replay could not reconnect for ${formatDuration(retryForMs)}: ${(error as Error).message}`,
            'Check that both servers are up and reachable, then run the same command with --resume: it continues from the position recorded on the target.',
            { cause: error },
          );
        }
        throw error;
      }
      log(
        `Replay connection lost (${ctx.redactor.redact((error as Error).message)}); reconnecting in ${formatDuration(delayMs)} from the position recorded on the target.`,
        'warn',
      );
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 15_000);
    }
  }
}

/** One connected session: from the recorded position until stopped, finished, or a connection fails. */
async function runSession(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: ReplayOptions,
  shared: Shared,
): Promise<ReplayOutcome> {
  const id = options.migrationId;
  const log = (message: string, level: 'info' | 'warn' = 'info') => ctx.emit({ type: 'log', level, message });
  const batchChanges = options.batchChanges ?? DEFAULT_BATCH_CHANGES;
  const groupChanges = options.groupChanges ?? 20_000;
  const groupMs = options.groupMs ?? 250;
  /** How long an idle-looking group waits for the next transaction before it is committed. */
  const groupWaitMs = options.groupWaitMs ?? 5;
  const clients: pg.Client[] = [];
  let stream: ChangeStream | undefined;
  const groupTimerRef: { current: NodeJS.Timeout | undefined } = { current: undefined };
  try {
    const control = await openClient(endpoints.target);
    clients.push(control);
    const apply = await openClient(endpoints.target);
    clients.push(apply);
    const sourceStatus = await openClient(endpoints.source);
    clients.push(sourceStatus);

    const layout = await readTimescaleLayout(sourceStatus, shared.migration.schemas);
    const routeChunk = layout?.hypertables.length
      ? createChunkRouter({
          source: await (async () => {
            // Its own connection: the router's queries run inside the stream's handlers.
            const client = await openClient(endpoints.source);
            clients.push(client);
            return client;
          })(),
          layout,
          fullPublication: publicationNameFor(id, 'full'),
          onLateChunk: async (chunk) => {
            await recordLateChunks(control, id, [chunk], false);
            log(
              `TimescaleDB created chunk ${chunk.schema}.${chunk.name} of ${chunk.hypertable.schema}.${chunk.hypertable.name} during the migration: its inserts are replicated; it now publishes updates and deletes too (earlier ones are checked at cutover).`,
            );
          },
        })
      : undefined;

    const targetHypertables = await readHypertableNames(apply);
    /** TimescaleDB: how far back the replayed changes reach per hypertable (for the aggregates' refresh). */
    const touched = layout?.continuousAggregates.length ? new TouchedRanges(layout) : undefined;
    await touched?.load(control, id);
    const pollChunks =
      layout?.hypertables.length && !shared.migration.publications.includes(publicationNameFor(id, 'chunks'))
        ? async () => {
            const added = await publishNewChunks({
              source: sourceStatus,
              layout,
              publications: {
                full: publicationNameFor(id, 'full'),
                insertOnly: publicationNameFor(id, 'insert_only'),
              },
              // Recorded, and applied idempotently, before any of its changes can be decoded.
              beforePublish: async (chunk) => {
                await recordLateChunks(control, id, [chunk], true);
                rules.set(relKey(chunk), RECOPY_RULE);
              },
            });
            if (added.length === 0) return;
            log(
              `TimescaleDB created ${added.length} chunks during the migration (${added.map((c) => `${c.schema}.${c.name}`).join(', ')}): published from now on; their rows written before are copied again at cutover.`,
            );
          }
        : undefined;

    let triggerMode: TriggerMode | undefined;
    if (options.mode === 'apply') {
      triggerMode = await prepareApplySession(apply);
      if (triggerMode === 'disabled_user_triggers') {
        const tables = (await listTables(sourceStatus, shared.migration.schemas)).filter(isReplicated);
        const n = await disableUserTriggers(apply, id, tables);
        log(
          `session_replication_role is not permitted on the target: disabled ${n} user triggers for the replay (restored at cutover). Foreign keys stay checked.`,
          'warn',
        );
      }
      await control.query(`UPDATE ${S}.replay SET trigger_mode = $2 WHERE migration_id = $1`, [
        id,
        triggerMode,
      ]);
      const relaxed = await relaxIdentityColumns(apply, id, shared.migration.schemas).catch(
        (error: Error) => {
          log(
            `Identity columns stay GENERATED ALWAYS (${error.message}): a replayed change of such a value will fail.`,
            'warn',
          );
          return [] as string[];
        },
      );
      if (relaxed.length) {
        log(
          `Identity columns ${relaxed.join(', ')} are GENERATED BY DEFAULT during the replay (ALWAYS again at cutover).`,
        );
      }
      await drainSpool(ctx, apply, id, options);
    }
    const position = (
      await control.query(
        `SELECT applied_lsn::text AS a, spooled_lsn::text AS s FROM ${S}.replay WHERE migration_id = $1`,
        [id],
      )
    ).rows[0];
    const applied = parseLsn(position.a);
    const spooled = position.s ? parseLsn(position.s) : applied;
    /** What is durable on the target: the last applied (or spooled) commit end. */
    let durable: Lsn = (spooled > applied ? spooled : applied) as Lsn;
    let spoolSeq =
      options.mode === 'spool'
        ? Number(
            (
              await control.query(
                `SELECT coalesce(max(seq), 0)::bigint AS n FROM ${S}.spool WHERE migration_id = $1`,
                [id],
              )
            ).rows[0].n,
          ) + 1
        : 0;

    // Per-session state of the stream and the open group.
    let skipping = false;
    let inTxn = false;
    let groupOpen = false;
    let groupCount = 0;
    let groupStartedMs = 0;
    let groupEnd: Lsn | undefined;
    let groupCommitTime: Date | null = null;
    /** Complete source transactions in the open group, and where the current one's changes start in `buffer`. */
    let groupTxns = 0;
    let txnStart = 0;
    /**
     * Where the WAL of the open group's first transaction starts: the lag counts from there, not from
     * `durable`, which an idle acknowledgement moves into the WAL of a transaction the decoder is still reading.
     */
    let groupFirstLsn: Lsn | undefined;
    let txnFirstLsn: Lsn | undefined;
    /** Apply mode: reconciled changes; spool mode: changes and begin/commit/relation markers as JSON. */
    let buffer: (Reconciled | Record<string, unknown>)[] = [];
    /** pgoutput bytes taken into the buffer since the last flush (what is kept across a flush is not recounted). */
    let bufferBytes = 0;
    let commitLsn: Lsn = 0n as Lsn;
    const rules = options.mode === 'apply' ? await readRefreshRules(control, id) : new Map();
    if (rules.size)
      log(
        `${rules.size} tables were copied from a fresh snapshot: their earlier changes are skipped or applied idempotently.`,
      );
    let lastCommitTimeMs: number | null = null;
    const targets = new Map<string, TargetColumns>();
    const relations = new Map<string, RelationDef>();
    /** Holds the stream before a transaction at or past a position (cutover end, validation point). */
    let hold: { at: Lsn; reached: boolean; release: () => void; released: Promise<void> } | undefined;

    // All target work goes through one queue: handlers and the periodic tick never interleave.
    let lock: Promise<unknown> = Promise.resolve();
    /** Queued or running serial work: while there is none, a change can be taken synchronously. */
    let serialBusy = 0;
    const serial = <T>(fn: () => Promise<T>): Promise<T> => {
      serialBusy += 1;
      const next = lock.then(fn).finally(() => {
        serialBusy -= 1;
      });
      lock = next.catch(() => undefined);
      return next;
    };

    const targetOf = async (rel: RelationRef): Promise<TargetColumns> => {
      const key = relKey(rel);
      let table = targets.get(key);
      if (!table) {
        table = await readTargetColumns(apply, rel);
        if (!table)
          throw schemaChanged(`table ${rel.schema}.${rel.name} does not exist on the target`, durable);
        targets.set(key, table);
      }
      return table;
    };

    /**
     * The batch the target is applying while the next one is read and built (apply mode): at most one, and
     * settled before anything else uses the apply session, so its error surfaces before any later step.
     */
    let inflight: Promise<void> | undefined;
    /** The first failure of a batch: sticky, so no later step can commit the group it belonged to. */
    let applyFailure: Error | undefined;
    const settle = async () => {
      if (applyFailure) throw applyFailure;
      const current = inflight;
      inflight = undefined;
      if (!current) return;
      try {
        await current;
      } catch (error) {
        applyFailure = asReplayError(error as Error, durable);
        throw applyFailure;
      }
    };

    const flush = async () => {
      // A failed batch or commit is sticky: nothing more is sent on this session, not even an empty flush.
      if (applyFailure) throw applyFailure;
      if (buffer.length === 0) return;
      // Callers run inside serial(): no change joins the buffer while this waits.
      const changes = buffer;
      buffer = [];
      bufferBytes = 0;
      txnStart = 0;
      if (options.mode === 'spool') {
        await settle();
        const values: string[] = [];
        const params: unknown[] = [id];
        for (const item of changes) {
          params.push(spoolSeq++, (item as { endLsn?: string }).endLsn ?? null, JSON.stringify(item));
          const n = params.length;
          values.push(`($1, $${n - 2}, $${n - 1}::pg_lsn, $${n}::jsonb)`);
        }
        await apply.query(
          `INSERT INTO ${S}.spool (migration_id, seq, end_lsn, change) VALUES ${values.join(', ')}`,
          params,
        );
        return;
      }
      // The statements are built while the target still applies the batch ahead (its tables' columns are
      // known by then, unless a table is new); the batch is sent once that one has finished.
      const reconciled = changes as Reconciled[];
      const statements = buildReconciled(reconciled, (rel) => targets.get(relKey(rel)));
      await settle();
      inflight = statements
        ? applyStatements(apply, statements).then(() => undefined)
        : applyReconciled(apply, reconciled, targetOf);
      inflight.catch(() => undefined);
    };

    /** Chains target work after the work in flight: it starts once that has succeeded. */
    const chain = (work: () => Promise<void>) => {
      if (applyFailure) throw applyFailure;
      const ahead = inflight;
      inflight = ahead ? ahead.then(work) : work();
      inflight.catch(() => undefined);
    };

    /**
     * Sends the open group's last batch and its commit, and returns without waiting for them (apply mode, no
     * TimescaleDB bounds to save): the next group's changes are read and built meanwhile. The position
     * becomes durable, and is acknowledged, only once the target has committed it; the next statement on the
     * apply session (settle()) waits for that and fails if the commit did.
     */
    const sendCommit = async (): Promise<boolean> => {
      // Only at a transaction boundary: a group holding part of a source transaction is never committed
      // (on a stop it is rolled back with the connection, and the transaction is replayed whole on resume).
      if (applyFailure) throw applyFailure;
      if (!groupOpen || groupEnd === undefined || inTxn) return false;
      await flush();
      const end = groupEnd;
      const commitTime = groupCommitTime;
      groupOpen = false;
      groupCount = 0;
      groupTxns = 0;
      groupFirstLsn = undefined;
      chain(async () => {
        await commitGroup(apply, id, {
          endLsn: formatLsn(end),
          commitTime,
          column: options.mode === 'spool' ? 'spooled_lsn' : 'applied_lsn',
        });
        if (end > durable) durable = end;
        shared.lastProgressMs = ctx.clock.nowMs();
        await stream?.acknowledge(end);
        options.onGroupCommitted?.(end);
      });
      return true;
    };

    const commitNow = async () => {
      if (!groupOpen || groupEnd === undefined || inTxn) {
        // Nothing to commit now, but a commit sent earlier may still be running: see it through (callers
        // stop, hand over or report a position next).
        await settle();
        return;
      }
      // The bounds for the cutover's aggregate refresh, committed with the changes they cover.
      if (touched) {
        await flush();
        await settle();
        await touched.save(apply, id);
      }
      if (await sendCommit()) await settle();
    };

    const scheduleGroupCommit = () => {
      if (groupTimerRef.current) return;
      groupTimerRef.current = setTimeout(() => {
        groupTimerRef.current = undefined;
        void serial(async () => {
          if (!inTxn) await commitNow();
        }).catch((error: Error) => {
          // Nobody awaits this commit: end the stream with its error (the group stays uncommitted).
          stream?.fail(asReplayError(error, durable));
        });
      }, groupWaitMs);
    };

    /** Opens a group: its BEGIN follows whatever the target is still applying (a previous group's commit). */
    const beginGroup = () => {
      if (groupOpen) return;
      if (applyFailure) throw applyFailure;
      chain(async () => {
        await apply.query('BEGIN');
      });
      groupOpen = true;
      groupStartedMs = ctx.clock.nowMs();
    };

    /**
     * Commits the complete source transactions of the open group and opens a new group for the current one,
     * keeping its buffered changes. Called before the current transaction sends its first changes while
     * complete ones share its group, and before a schema error: a failure in one transaction must never take
     * back the transactions before it (after a schema change they would no longer fit the corrected target,
     * and the replay could not get past them).
     */
    /** Runs `work` on the complete transactions' changes, with the current transaction's set aside meanwhile. */
    const withCurrentAside = async (work: () => Promise<void>) => {
      const current = buffer.slice(txnStart);
      buffer = buffer.slice(0, txnStart);
      await work();
      buffer = current;
      return current;
    };

    const commitCompleted = async () => {
      if (!inTxn || groupTxns === 0) return;
      const current = await withCurrentAside(async () => {
        inTxn = false; // what is left in the group is complete
        try {
          await commitNow();
        } finally {
          inTxn = true;
        }
      });
      groupCount = current.length;
      beginGroup();
      groupFirstLsn = txnFirstLsn;
    };

    /** Set once the session has finished a cutover: a transaction held at the end position never starts. */
    let sessionDone = false;
    const holdIfNeeded = async (commitLsn: Lsn) => {
      // A loop: a released hold may have been replaced by one further on (pause, then pause at X).
      while (hold && commitLsn >= hold.at && !sessionDone) {
        const current = hold;
        await serial(commitNow);
        current.reached = true;
        await current.released;
      }
    };

    const startTxn = (frame: { commitLsn: Lsn; firstLsn: Lsn }) => {
      inTxn = true;
      commitLsn = frame.commitLsn;
      txnStart = buffer.length;
      txnFirstLsn = frame.firstLsn;
      if (groupFirstLsn === undefined || frame.firstLsn < groupFirstLsn) groupFirstLsn = frame.firstLsn;
      // The spool keeps each transaction's commit position: the drain needs it for the refresh rules.
      if (options.mode === 'spool') buffer.push({ kind: 'begin', commitLsn: formatLsn(frame.commitLsn) });
    };

    /** Ends the current source transaction in the group; true when the group should be committed now. */
    const endTxn = (frame: { endLsn: Lsn; commitTimeUs: bigint }): boolean => {
      inTxn = false;
      groupTxns += 1;
      groupEnd = frame.endLsn;
      groupCommitTime = new Date(Number(frame.commitTimeUs / 1000n));
      lastCommitTimeMs = groupCommitTime.getTime();
      if (options.mode === 'spool') buffer.push({ kind: 'commit', endLsn: formatLsn(frame.endLsn) });
      if (groupCount >= groupChanges || ctx.clock.nowMs() - groupStartedMs >= groupMs) return true;
      // pending() counts this commit message too: more than one means more is already queued.
      const queued = stream ? pendingMessages() - 1 : 0;
      // Nothing queued right now, but the next transaction is often a few milliseconds away: commit soon
      // rather than now, so a stream of small transactions shares one target commit.
      if (queued <= 0) scheduleGroupCommit();
      return false;
    };

    const takeChange = (change: Change, bytes: number) => {
      if (skipping) return;
      bufferBytes += bytes;
      touched?.note(change);
      if (options.mode === 'spool') {
        // Spooled as JSON: an insert kept as a COPY line is written with its values.
        buffer.push(
          (change.kind === 'insert' && change.copy
            ? { kind: 'insert', rel: change.rel, values: change.values }
            : change) as unknown as Record<string, unknown>,
        );
      } else {
        const item = reconcile(change, commitLsn, rules);
        if (item) buffer.push(item);
      }
      groupCount += 1;
    };

    const handlers = {
      begin: (frame: { commitLsn: Lsn; firstLsn: Lsn; commitTimeUs: bigint }) => {
        if (frame.commitLsn < durable) {
          skipping = true;
          return undefined;
        }
        // The hot path: a group is open, nothing else runs and no hold applies, so no await is needed.
        if (serialBusy === 0 && !(hold && frame.commitLsn >= hold.at) && !sessionDone) {
          beginGroup();
          startTxn(frame);
          return undefined;
        }
        return (async () => {
          await holdIfNeeded(frame.commitLsn);
          if (sessionDone) return;
          await serial(async () => {
            inTxn = true;
            beginGroup();
            startTxn(frame);
          });
        })();
      },
      relation: (source: RelationDef) =>
        serial(async () => {
          // TimescaleDB: a chunk's changes go to its hypertable; its internal tables' are dropped. A table
          // that is a hypertable on the target (also one made so by --hypertable) is written without ONLY.
          const chunkRoute = routeChunk ? await routeChunk(source) : undefined;
          if (chunkRoute === null) return null;
          const route =
            chunkRoute ??
            (targetHypertables.has(relKey(source))
              ? { schema: source.schema, name: source.name, via: 'hypertable' as const }
              : undefined);
          const rel: RelationDef = route ? { ...source, schema: route.schema, name: route.name } : source;
          relations.set(relKey(rel), rel);
          if (options.mode === 'spool') {
            if (!skipping && groupOpen) buffer.push({ kind: 'relation', rel });
            return route;
          }
          // The columns read for the check are the ones changes of this relation are applied with.
          await settle();
          const table = await readTargetColumns(apply, rel);
          const mismatch = describeRelationMismatch(rel, table);
          if (mismatch) {
            targets.delete(relKey(rel));
            await commitCompleted();
            throw schemaChanged(mismatch, durable);
          }
          if (table) targets.set(relKey(rel), table);
          return route;
        }),
      change: (change: Change, bytes: number) => {
        // The hot path: nothing else is running, so the change joins the buffer right away (no promise).
        if (serialBusy === 0 && buffer.length + 1 < batchChanges && bufferBytes + bytes < BATCH_BYTES) {
          takeChange(change, bytes);
          return undefined;
        }
        return serial(async () => {
          takeChange(change, bytes);
          if (buffer.length < batchChanges && bufferBytes < BATCH_BYTES) return;
          if (txnStart > 0) {
            // Complete transactions fill most of the buffer: send them (the group stays open), keep the
            // current one's changes. The target's open transaction still holds only complete ones.
            await withCurrentAside(flush);
            return;
          }
          // The current transaction alone fills the buffer: it must send changes before it is complete, so
          // the complete ones before it are committed first (a failure in it must not take them back).
          await commitCompleted();
          await flush();
        });
      },
      commit: (frame: { endLsn: Lsn; commitTimeUs: bigint }) => {
        if (skipping) {
          skipping = false;
          return undefined;
        }
        // A group full while more is queued: its commit is sent, and the next group is read meanwhile.
        const commit = async () => {
          if (touched) await commitNow();
          else await sendCommit();
        };
        if (serialBusy === 0) return endTxn(frame) ? serial(commit) : undefined;
        return serial(async () => {
          if (endTxn(frame)) await commit();
        });
      },
    };
    let receivedProbe: () => number = () => 0;
    const pendingMessages = () => receivedProbe();

    stream = await openChangeStream(endpoints.source, {
      slotName: shared.migration.slotName,
      publications: shared.migration.publications,
      timescaleMarkers: routeChunk !== undefined,
      startLsn: durable,
      handlers,
    });
    receivedProbe = () => stream?.pending() ?? 0;
    log(
      `Replay (${options.mode}) streaming from ${formatLsn(durable)}${triggerMode ? `; target triggers: ${triggerMode}` : ''}.`,
    );
    // A heartbeat right away: a cutover asked just after a (re)start must not see "not running".
    await control.query(`UPDATE ${S}.replay SET heartbeat_at = now(), process = $2 WHERE migration_id = $1`, [
      id,
      `pid ${process.pid}`,
    ]);

    // The periodic tick: idle acknowledgement, lag, requests, cutover drain.
    let previous: LagSample | undefined;
    let lastLagMs = 0;
    let stopped = false;
    const streamEnded = stream.ended.then(
      () => undefined,
      (error: Error) => {
        throw asReplayError(error, durable);
      },
    );
    streamEnded.catch(() => undefined);
    const until = options.until?.then(() => 'until' as const);

    /** Where the work still to apply begins: the open group's first transaction, else what is durable. */
    const lagBase = (): Lsn =>
      groupOpen && groupFirstLsn !== undefined && groupFirstLsn < durable ? groupFirstLsn : durable;

    const tick = async (): Promise<ReplayOutcome | undefined> => {
      // A commit sent without waiting: see it through (and fail here if it failed) before anything else.
      if (!groupOpen) await settle();
      const now = ctx.clock.nowMs();
      // With nothing pending, the keepalive's WAL end is safe to confirm: the slot advances on an idle source.
      const idleEnd = stream?.idleWalEnd();
      const idle = !inTxn && !groupOpen && buffer.length === 0 && (stream?.pending() ?? 0) === 0;
      if (idle && idleEnd !== undefined && idleEnd > durable) {
        await apply.query(
          `UPDATE ${S}.replay SET ${options.mode === 'spool' ? 'spooled_lsn' : 'applied_lsn'} = $2::pg_lsn WHERE migration_id = $1`,
          [id, formatLsn(idleEnd)],
        );
        durable = idleEnd;
        await stream?.acknowledge(durable);
      }
      // Ask the server for a fresh keepalive so the idle check above has a current WAL end.
      await stream?.ping(durable);

      if (now - lastLagMs >= options.lagIntervalMs || shared.cutover || shared.pause) {
        const sourceLsn = parseLsn(
          (await sourceStatus.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l,
        );
        const sample: LagSample = { atMs: now, sourceLsn, appliedLsn: lagBase() };
        if (now - lastLagMs >= options.lagIntervalMs) {
          const facts = computeLag(previous, sample);
          const firstSample = previous === undefined;
          previous = sample;
          lastLagMs = now;
          const slot = await readSlot(sourceStatus, shared.migration.slotName);
          const caughtIdle = idle && (idleEnd ?? 0n) >= durable;
          const lagSeconds =
            facts.caughtUp && caughtIdle
              ? 0
              : lastCommitTimeMs !== null && facts.lagBytes > 0
                ? Math.max(0, (now - lastCommitTimeMs) / 1000)
                : 0;
          ctx.emit({
            type: 'replay:lag',
            lagBytes: facts.lagBytes,
            lagSeconds,
            sourceLsn: formatLsn(sourceLsn),
            appliedLsn: formatLsn(durable),
            sourceWalRate: facts.sourceWalRate,
            replayRate: facts.replayRate,
            etaSeconds: facts.etaSeconds,
            caughtUp: facts.caughtUp,
            retainedBytes: slot?.retainedBytes ?? null,
          });
          if (options.mode === 'apply') {
            if (facts.caughtUp) {
              log(`Target has caught up with source (replay_lag: ${formatBytes(facts.lagBytes)})`);
            } else {
              log(
                facts.etaSeconds === null && !firstSample
                  ? `Replay is not keeping up with the source (source_wal_rate: ${formatBytes(facts.sourceWalRate)}/s, target_replay_rate: ${formatBytes(facts.replayRate)}/s, replay_lag: ${formatBytes(facts.lagBytes)})`
                  : `Live-replay will complete in ${facts.etaSeconds === null ? 'unknown (measuring)' : formatDuration(facts.etaSeconds * 1000)} (source_wal_rate: ${formatBytes(facts.sourceWalRate)}/s, target_replay_rate: ${formatBytes(facts.replayRate)}/s, replay_lag: ${formatBytes(facts.lagBytes)})`,
                facts.etaSeconds === null && !firstSample ? 'warn' : 'info',
              );
            }
          }
          await control.query(
            `UPDATE ${S}.replay SET source_lsn = $2::pg_lsn, lag_bytes = $3, lag_seconds = $4, source_wal_rate = $5, replay_rate = $6,
                    retained_bytes = $7, heartbeat_at = now(), process = $8 WHERE migration_id = $1`,
            [
              id,
              formatLsn(sourceLsn),
              facts.lagBytes,
              lagSeconds,
              facts.sourceWalRate,
              facts.replayRate,
              slot?.retainedBytes ?? null,
              `pid ${process.pid}`,
            ],
          );
        }
      } else {
        await control.query(
          `UPDATE ${S}.replay SET heartbeat_at = now(), process = $2 WHERE migration_id = $1`,
          [id, `pid ${process.pid}`],
        );
      }
      if (now - lastNewTableCheckMs >= options.lagIntervalMs) {
        lastNewTableCheckMs = now;
        // TimescaleDB without a chunk-schema publication: new chunks join the publications here (before
        // the new-table check, which would otherwise stop on them).
        if (pollChunks) await pollChunks();
        if (options.mode === 'apply') await checkNewTables(sourceStatus, shared.migration, durable);
      }
      if (options.mode !== 'apply') return undefined;
      return await handleRequests(now, idle, idleEnd);
    };
    let lastNewTableCheckMs = 0;

    const handleRequests = async (
      now: number,
      idle: boolean,
      idleEnd: Lsn | undefined,
    ): Promise<ReplayOutcome | undefined> => {
      const drainedTo = (at: Lsn) =>
        (hold?.reached ?? false) || durable >= at || (idle && (idleEnd ?? 0n) >= at);
      // A cutover in progress: wait for the drain, then finish.
      if (shared.cutover) {
        const c = shared.cutover;
        if (drainedTo(c.endLsn)) {
          const afterEnd = hold?.reached ?? false;
          ctx.emit({
            type: 'cutover:step',
            step: 'drained',
            detail: `applied up to ${formatLsn(c.endLsn)}`,
            seconds: (now - c.startedMs) / 1000,
          });
          if (afterEnd) {
            log(
              `WARNING: the source received writes after the cutover end position ${formatLsn(c.endLsn)}; they are NOT on the target. Fence every writer (--fence-roles) or stop the application before cutover.`,
              'warn',
            );
          }
          await stream?.stop();
          try {
            const result = await runCutoverFinish(ctx, endpoints, {
              migrationId: id,
              request: c.request,
              endLsn: formatLsn(c.endLsn),
              writesAfterEnd: afterEnd,
              startedMs: c.startedMs,
            });
            return { kind: 'cutover-done', endLsn: result.endLsn };
          } finally {
            // A transaction held past the end position is dropped, never applied.
            sessionDone = true;
            hold?.release();
            hold = undefined;
          }
        }
        if (now - c.startedMs > c.request.timeoutMs) {
          await unfenceRoles(sourceStatus, c.fenced);
          await finishRequest(control, c.request.id, 'failed', {
            code: 'CUTOVER_TIMEOUT',
            message: `The drain to ${formatLsn(c.endLsn)} did not finish within ${formatDuration(c.request.timeoutMs)} (applied ${formatLsn(durable)}).`,
          });
          log(`Cutover timed out; the source was unfenced and the replay goes on.`, 'warn');
          shared.cutover = undefined;
          hold?.release();
          hold = undefined;
        }
        return undefined;
      }
      if (shared.pause) {
        const p = shared.pause;
        const release = async () => {
          await control.query(`UPDATE ${S}.replay SET paused_at = NULL WHERE migration_id = $1`, [id]);
          shared.pause = undefined;
          hold?.release();
          hold = undefined;
        };
        if (now - p.startedMs > p.timeoutMs) {
          // The validating process is gone or stuck: never stay paused for good.
          log(`Pause for validation timed out; the replay goes on.`, 'warn');
          await finishRequest(control, p.requestId, 'failed', {
            code: 'REPLAY_NOT_RUNNING',
            message: 'pause timed out',
          });
          await release();
          return undefined;
        }
        const { rows } = await control.query(`SELECT state, params FROM ${S}.request WHERE id = $1`, [
          p.requestId,
        ]);
        const request = rows[0];
        if (request?.state !== 'pending' && request?.state !== 'running') {
          await release();
          return undefined;
        }
        if (p.at === undefined) {
          // Stage 1: nothing new is applied; once the open group is committed, say where we stand. The
          // validator then takes its source snapshot at X, which cannot be behind what is applied.
          if (!inTxn) await commitNow();
          if (!inTxn && !groupOpen && !p.held) {
            p.held = true;
            await control.query(`UPDATE ${S}.request SET result = $2, updated_at = now() WHERE id = $1`, [
              p.requestId,
              JSON.stringify({ stage: 'held', applied: formatLsn(durable) }),
            ]);
          }
          if (p.held && request?.params?.at) {
            // Stage 2: apply everything before X, then hold again.
            p.at = parseLsn(request.params.at);
            const previousHold = hold;
            hold = makeHold(p.at);
            previousHold?.release();
            log(`Pausing the replay at ${formatLsn(p.at)} for an aligned validation.`);
          }
          return undefined;
        }
        if (drainedTo(p.at)) {
          await control.query(`UPDATE ${S}.replay SET paused_at = $2::pg_lsn WHERE migration_id = $1`, [
            id,
            formatLsn(p.at),
          ]);
        }
        return undefined;
      }
      const { rows } = await control.query(
        `UPDATE ${S}.request SET state = 'running', updated_at = now()
          WHERE id = (SELECT id FROM ${S}.request WHERE migration_id = $1 AND state = 'pending' ORDER BY id LIMIT 1)
          RETURNING id, kind, params`,
        [id],
      );
      const request = rows[0];
      if (!request) return undefined;
      if (request.kind === 'pause') {
        shared.pause = {
          requestId: request.id,
          startedMs: now,
          timeoutMs: Number(request.params.timeoutMs ?? 15 * 60_000),
          held: false,
        };
        // Hold before the next transaction, whatever its position.
        hold = makeHold(0n as Lsn);
        return undefined;
      }
      if (request.kind === 'cutover') {
        const params = request.params as Omit<CutoverRequest, 'id'>;
        const lagBytes = previous
          ? Number(previous.sourceLsn > lagBase() ? previous.sourceLsn - lagBase() : 0n)
          : Number.POSITIVE_INFINITY;
        if (!params.force && params.maxLagBytes !== undefined && lagBytes > params.maxLagBytes) {
          await finishRequest(control, request.id, 'failed', {
            code: 'CUTOVER_LAG_TOO_HIGH',
            message: `Replay lag is ${formatBytes(lagBytes)}, above --max-lag ${formatBytes(params.maxLagBytes)}.`,
          });
          return undefined;
        }
        const fenced = await fenceRoles(sourceStatus, params.fenceRoles ?? []);
        if (fenced.length) log(`Fenced roles ${fenced.join(', ')}: read-only, sessions ended.`);
        const endLsn = parseLsn(
          (await sourceStatus.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l,
        );
        shared.cutover = { request: { ...params, id: request.id }, endLsn, startedMs: now, fenced };
        hold = makeHold(endLsn);
        await updateMigration(control, id, { phase: Phase.cutover });
        ctx.emit({ type: 'cutover:step', step: 'requested', detail: `end position ${formatLsn(endLsn)}` });
        log(`Cutover: draining to ${formatLsn(endLsn)} …`);
        return undefined;
      }
      await finishRequest(control, request.id, 'failed', {
        code: 'CONFIG_INVALID_OPTION',
        message: `unknown request '${request.kind}'`,
      });
      return undefined;
    };

    const makeHold = (at: Lsn) => {
      let release: () => void = () => undefined;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      return { at, reached: false, release, released };
    };

    // Resume a cutover that a previous session started (the request row says running).
    if (options.mode === 'apply' && shared.cutover) hold = makeHold(shared.cutover.endLsn);

    // A stop (SIGINT, SIGTERM) is handled at once, not at the next tick.
    const stopRequested = new Promise<'stop'>((resolve) => {
      if (ctx.stopSignal.aborted) resolve('stop');
      else ctx.stopSignal.addEventListener('abort', () => resolve('stop'), { once: true });
    });
    for (;;) {
      const interval = shared.cutover || shared.pause ? 200 : 1000;
      const sleep = new Promise<'tick'>((r) => setTimeout(() => r('tick'), interval));
      const next = await Promise.race([
        sleep,
        stopRequested,
        streamEnded.then(() => 'ended' as const),
        ...(until ? [until] : []),
      ]);
      if (ctx.stopSignal.aborted || stopped) {
        await serial(commitNow).catch(() => undefined);
        return { kind: 'stopped' };
      }
      if (next === 'ended')
        throw new MigrationError(
          'REPLAY_STREAM_FAILED',
          'The replication stream ended unexpectedly.',
          'The replay reconnects by itself.',
        );
      if (next === 'until') {
        // Spooling stops once the copy is done: make what was received durable, then hand over (after
        // the transaction being received, if any, has committed).
        await serial(async () => {
          if (!inTxn) await commitNow();
        });
        if (!inTxn) {
          stopped = true;
          return { kind: 'stopped' };
        }
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (
        options.segmentMs !== undefined &&
        !shared.cutover &&
        !shared.pause &&
        ctx.clock.nowMs() - shared.startedMs >= options.segmentMs
      ) {
        const ended = await serial(async () => {
          if (inTxn) return false;
          await commitNow();
          return true;
        });
        if (ended) {
          log(
            `Replay segment ended after ${formatDuration(ctx.clock.nowMs() - shared.startedMs)} at ${formatLsn(durable)}; the next run resumes from there.`,
          );
          return { kind: 'segment-ended', appliedLsn: formatLsn(durable) };
        }
      }
      const outcome = await serial(tick);
      if (outcome) {
        shared.outcome = outcome;
        return outcome;
      }
    }
  } finally {
    if (groupTimerRef.current) clearTimeout(groupTimerRef.current);
    await stream?.stop().catch(() => undefined);
    for (const client of clients) await client.end().catch(() => undefined);
  }
}

/** Leaves the reason where `status` (from any machine) shows it; best effort. */
async function recordFailure(endpoints: Endpoints, migrationId: string, error: unknown): Promise<void> {
  const e = isMigrationError(error)
    ? { code: error.code, message: error.message, hint: error.hint }
    : {
        code: 'INTERNAL',
        message: error instanceof Error ? error.message : String(error),
        hint: 'See the log.',
      };
  await withClient(endpoints.target, (c) => updateMigration(c, migrationId, { error: e })).catch(
    () => undefined,
  );
}

function schemaChanged(what: string, durable: Lsn): MigrationError {
  return new MigrationError(
    'REPLAY_SCHEMA_CHANGED',
    `The source's schema changed during replay: ${what}.`,
    `Apply the same change on the target (e.g. the same ALTER TABLE), then run 'pg-live-migrate replay --resume': nothing after ${formatLsn(durable)} was applied and nothing is lost (the slot keeps it).`,
  );
}

/** Tables created on the source in a migrated schema after the snapshot are not published: stop and say so. */
async function checkNewTables(source: pg.Client, migration: MigrationRow, durable: Lsn): Promise<void> {
  const tables = (await listTables(source, migration.schemas)).filter(isReplicated);
  const { rows } = await source.query(
    'SELECT schemaname AS schema, tablename AS name FROM pg_publication_tables WHERE pubname = ANY($1)',
    [migration.publications],
  );
  const published = new Set(rows.map((r) => tableKey({ schema: r.schema, name: r.name })));
  const fresh = tables.filter((t) => !published.has(tableKey(t)));
  if (fresh.length === 0) return;
  const names = fresh.map((t) => `${t.schema}.${t.name}`).join(', ');
  throw new MigrationError(
    'REPLAY_NEW_TABLE',
    `Table(s) ${names} were created on the source during the migration; their rows are not replicated.`,
    `Create them on the target (pg_dump --schema-only -t …), add them to the publication (ALTER PUBLICATION ${migration.publications[0]} ADD TABLE …), copy their current rows, then run 'pg-live-migrate replay --resume' (applied up to ${formatLsn(durable)}).`,
  );
}

async function finishRequest(
  control: pg.Client,
  requestId: number,
  state: 'done' | 'failed',
  result: Record<string, unknown>,
): Promise<void> {
  await control.query(`UPDATE ${S}.request SET state = $2, result = $3, updated_at = now() WHERE id = $1`, [
    requestId,
    state,
    JSON.stringify(result),
  ]);
}

/** Tables copied from a fresh snapshot (see copy.ts planRefresh) and how their earlier changes are treated. */
/** A TimescaleDB chunk published after its first rows: changes applied idempotently until cutover copies it. */
const RECOPY_RULE = { lsn: 0xffff_ffff_ffff_ffffn as Lsn, mode: 'idempotent' as const };

async function readRefreshRules(client: pg.Client, id: string): Promise<RefreshRules> {
  const { rows } = await client.query(
    `SELECT table_schema, table_name, lsn::text AS lsn, mode FROM ${S}.refresh WHERE migration_id = $1`,
    [id],
  );
  const rules: RefreshRules = new Map(
    rows.map((r) => [
      relKey({ schema: r.table_schema, name: r.table_name }),
      { lsn: parseLsn(r.lsn), mode: r.mode },
    ]),
  );
  for (const chunk of await readRecopyChunks(client, id)) rules.set(relKey(chunk), RECOPY_RULE);
  return rules;
}

/**
 * The statements for `items`, in order (idempotent and plain runs each built in their mode), or undefined when
 * `known` lacks a table's target columns.
 */
function buildReconciled(
  items: readonly Reconciled[],
  known: (rel: RelationRef) => TargetColumns | undefined,
): ApplyStatement[] | undefined {
  // By relation object (the stream hands every change of a table the same one).
  const byRef = new Map<RelationRef, TargetColumns>();
  for (const { change } of items) {
    for (const rel of change.kind === 'truncate' ? change.rels : [change.rel]) {
      if (byRef.has(rel)) continue;
      const table = known(rel);
      if (!table) return undefined;
      byRef.set(rel, table);
    }
  }
  const catalog = (rel: RelationRef) => byRef.get(rel) as TargetColumns;
  const statements: ApplyStatement[] = [];
  let start = 0;
  while (start < items.length) {
    const idempotent = items[start]?.idempotent ?? false;
    let end = start;
    while (end < items.length && items[end]?.idempotent === idempotent) end += 1;
    statements.push(
      ...buildApplySql(
        items.slice(start, end).map((i) => i.change),
        catalog,
        { idempotent },
      ),
    );
    start = end;
  }
  return statements;
}

/** Applies reconciled changes in order, in runs that share the idempotent flag. */
async function applyReconciled(
  apply: pg.Client,
  items: Reconciled[],
  targetOf: (rel: RelationRef) => Promise<TargetColumns>,
): Promise<void> {
  const loaded = new Map<RelationRef, TargetColumns>();
  for (const { change } of items) {
    for (const rel of change.kind === 'truncate' ? change.rels : [change.rel]) {
      if (!loaded.has(rel)) loaded.set(rel, await targetOf(rel));
    }
  }
  await applyStatements(apply, buildReconciled(items, (rel) => loaded.get(rel)) ?? []);
}

/** Applies what was spooled during the copy, in order, each source transaction exactly once. */
async function drainSpool(
  ctx: WorkflowContext,
  apply: pg.Client,
  id: string,
  options: ReplayOptions,
): Promise<void> {
  const rules = await readRefreshRules(apply, id);
  const targets = new Map<string, TargetColumns>();
  const targetOf = async (rel: RelationRef) => {
    let table = targets.get(relKey(rel));
    if (!table) {
      table = await readTargetColumns(apply, rel);
      if (!table)
        throw schemaChanged(`table ${rel.schema}.${rel.name} does not exist on the target`, 0n as Lsn);
      targets.set(relKey(rel), table);
    }
    return table;
  };
  let total = 0;
  let open = false;
  let buffer: Reconciled[] = [];
  let lastSeq = 0;
  let txns = 0;
  let lastCommit: { seq: number; endLsn: string } | undefined;
  /** Commits the complete transactions of the open group (never part of the current one, see runSession). */
  const commitCompleted = async () => {
    if (txns === 0 || !lastCommit) return;
    await apply.query(`DELETE FROM ${S}.spool WHERE migration_id = $1 AND seq <= $2`, [id, lastCommit.seq]);
    await commitGroup(apply, id, { endLsn: lastCommit.endLsn, commitTime: null, column: 'applied_lsn' });
    txns = 0;
    await apply.query('BEGIN');
  };
  let commitLsn = 0n as Lsn;
  const flush = async () => {
    if (buffer.length === 0) return;
    await applyReconciled(apply, buffer, targetOf);
    total += buffer.length;
    buffer = [];
  };
  for (;;) {
    const { rows } = await apply.query(
      `SELECT seq, change FROM ${S}.spool WHERE migration_id = $1 AND seq > $2 ORDER BY seq LIMIT 5000`,
      [id, lastSeq],
    );
    if (rows.length === 0) break;
    if (!open) {
      await apply.query('BEGIN');
      open = true;
    }
    for (const [i, row] of rows.entries()) {
      lastSeq = Number(row.seq);
      const item = row.change as
        | Change
        | { kind: 'begin'; commitLsn: string }
        | { kind: 'commit'; endLsn: string }
        | { kind: 'relation'; rel: RelationDef };
      if (item.kind === 'begin') {
        commitLsn = parseLsn(item.commitLsn);
        continue;
      }
      if (item.kind === 'relation') {
        const table = await readTargetColumns(apply, item.rel);
        const mismatch = describeRelationMismatch(item.rel, table);
        if (mismatch) {
          buffer = [];
          await commitCompleted();
          throw schemaChanged(mismatch, parseLsn(lastCommit?.endLsn ?? '0/0'));
        }
        if (table) targets.set(relKey(item.rel), table);
        continue;
      }
      if (item.kind === 'commit') {
        await flush();
        txns += 1;
        lastCommit = { seq: lastSeq, endLsn: item.endLsn };
        // Commit at a transaction end when enough are grouped or this chunk has nothing after it; the
        // spool rows go in the same commit as their changes and the applied position.
        if (txns >= 200 || i === rows.length - 1) {
          await apply.query(`DELETE FROM ${S}.spool WHERE migration_id = $1 AND seq <= $2`, [id, lastSeq]);
          await commitGroup(apply, id, { endLsn: item.endLsn, commitTime: null, column: 'applied_lsn' });
          txns = 0;
          open = false;
          await apply.query('BEGIN');
          open = true;
        }
        continue;
      }
      const reconciled = reconcile(item, commitLsn, rules);
      if (reconciled) buffer.push(reconciled);
      if (buffer.length >= (options.batchChanges ?? DEFAULT_BATCH_CHANGES)) {
        await commitCompleted();
        await flush();
      }
    }
  }
  if (open) await apply.query('ROLLBACK');
  if (total)
    ctx.emit({ type: 'log', level: 'info', message: `Applied ${total} changes spooled during the copy.` });
}
