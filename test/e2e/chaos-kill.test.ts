// Chaos: `migrate` is killed with SIGKILL at 20+ random points (during the copy, while spooling, at the
// spool drain, during live replay and during the cutover) while the source takes writes, and resumed each
// time with --resume. The end state must be exact: equal checksums, every writer row once, none missing.
// The kill plan comes from a seeded PRNG; the seed is in the test name (CHAOS_SEED=<n> replays a plan).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertNoLeaks,
  type Background,
  type CliProcess,
  type CliResult,
  createRandom,
  createWriterTables,
  diffSequences,
  freshDatabases,
  keepServerLogs,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  startPgbench,
  startWriter,
  type Writer,
  waitFor,
} from '../helpers/clusters';

const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MIGRATION_ID = 'chaos';
const PREFILLED_ROWS = 40_000;

type KillPoint = 'copy' | 'spool' | 'post-data' | 'drain' | 'replay' | 'cutover';

interface MigrationState {
  parts: number;
  partsDone: number;
  phase: string;
  copied: boolean;
  applied: bigint;
  spooled: bigint;
  spoolRows: number;
  /** States of the cutover requests, oldest first. */
  requests: string[];
  /** Seconds since the running replay last reported itself (null: never). */
  heartbeatAgeS: number | null;
}

const STATE_SQL = `
  SELECT (SELECT count(*) FROM _pg_live_migrate.copy_part WHERE migration_id = $1)::int AS parts,
         (SELECT count(*) FROM _pg_live_migrate.copy_part WHERE migration_id = $1 AND done_at IS NOT NULL)::int AS parts_done,
         m.phase, m.copy_finished_at IS NOT NULL AS copied,
         coalesce(r.applied_lsn - '0/0'::pg_lsn, -1)::text AS applied,
         coalesce(r.spooled_lsn - '0/0'::pg_lsn, -1)::text AS spooled,
         (SELECT count(*) FROM _pg_live_migrate.spool WHERE migration_id = $1)::int AS spool_rows,
         (SELECT coalesce(array_agg(state ORDER BY id), '{}') FROM _pg_live_migrate.request
           WHERE migration_id = $1 AND kind = 'cutover') AS requests,
         extract(epoch FROM now() - r.heartbeat_at)::float8 AS heartbeat_age_s
    FROM _pg_live_migrate.migration m LEFT JOIN _pg_live_migrate.replay r USING (migration_id)
   WHERE m.migration_id = $1`;

const CUTOVER_STEPS = ['requested', 'drained', 'sequences', 'materialized views'] as const;

describe(`migrate under kill -9 at random points (seed ${SEED})`, () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;
  let common: string[];
  let monitor: pg.Client | undefined;
  let writer: Writer | undefined;
  let pgbench: Background | undefined;
  const running = new Set<CliProcess>();

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'chaos');
    await pair.source.run('pgbench', [
      '-i',
      '-q',
      '-s',
      '5',
      '-h',
      '127.0.0.1',
      '-p',
      String(pair.source.port),
      '-U',
      'postgres',
      'chaos',
    ]);
    await createWriterTables(uris.source, PREFILLED_ROWS);
    dir = `${pair.target.dataDir}-work`;
    common = ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', MIGRATION_ID];
  });

  afterAll(async () => {
    try {
      await writer?.stop();
      await pgbench?.stop();
      for (const proc of running) proc.child.kill('SIGKILL');
      await Promise.all([...running].map((p) => p.result));
      await monitor?.end().catch(() => undefined);
      if (uris) await runCli(['clean', ...common, '--prune']);
      if (pair) await assertNoLeaks(pair);
    } finally {
      if (pair && dir) await keepServerLogs(pair, dir);
      await pair?.stop();
    }
  });

  it(
    `ends with equal checksums and every writer row exactly once after 20+ SIGKILLs and resumes (seed ${SEED})`,
    async () => {
      const random = createRandom(SEED);
      const started = Date.now();
      const journal: string[] = [];
      const note = (line: string) => {
        const text = `[chaos-kill seed ${SEED} +${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`;
        journal.push(text);
        console.log(text);
      };
      monitor = new pg.Client({ connectionString: uris.target, application_name: 'plm-test-monitor' });
      monitor.on('error', () => undefined);
      await monitor.connect();
      const client = monitor;
      const readState = async (): Promise<MigrationState | undefined> => {
        const { rows } = await client.query(STATE_SQL, [MIGRATION_ID]).catch(() => ({ rows: [] }));
        const r = rows[0];
        if (!r) return undefined;
        return {
          parts: r.parts,
          partsDone: r.parts_done,
          phase: r.phase,
          copied: r.copied,
          applied: BigInt(r.applied),
          spooled: BigInt(r.spooled),
          spoolRows: r.spool_rows,
          requests: r.requests,
          heartbeatAgeS: r.heartbeat_age_s,
        };
      };

      const migrateArgs = [
        'migrate',
        ...common,
        '--lag-interval',
        '1s',
        '--table-jobs',
        '2',
        '--split-tables-larger-than',
        '2MB',
      ];
      const spawnTracked = (args: string[]) => {
        const proc = spawnCli(args);
        running.add(proc);
        void proc.result.then(() => running.delete(proc));
        return proc;
      };
      const tail = (text: string, lines = 40) => text.trimEnd().split('\n').slice(-lines).join('\n');

      /** Waits for `condition` on the databases while `proc` runs; returns early with its result if it exits. */
      const waitOrExit = async <T>(
        proc: CliProcess,
        what: string,
        condition: (state: MigrationState | undefined, stderr: string) => T | undefined,
        timeoutMs = 90_000,
      ): Promise<{ value: T } | { exited: CliResult }> => {
        let exited: CliResult | undefined;
        void proc.result.then((r) => {
          exited = r;
        });
        return waitFor<{ value: T } | { exited: CliResult }>(
          async () => {
            if (exited) return { exited };
            const value = condition(await readState(), proc.output().stderr);
            return value === undefined ? undefined : { value };
          },
          { timeoutMs, intervalMs: 20, what },
        ).catch((error: Error) => {
          throw new Error(
            `${error.message}\n--- migrate stderr (tail) ---\n${tail(proc.output().stderr)}\n--- journal ---\n${journal.join('\n')}`,
          );
        });
      };
      const exitedMessage = (what: string, r: CliResult) =>
        `migrate exited (code ${r.code}, signal ${r.signal}) while waiting for ${what}.\n--- its stderr ---\n${tail(r.stderr, 80)}\n--- journal ---\n${journal.join('\n')}`;
      /** As waitOrExit, but a process that exits first fails the test with its stderr. */
      const waitWhileRunning = async <T>(
        proc: CliProcess,
        what: string,
        condition: (state: MigrationState | undefined, stderr: string) => T | undefined,
        timeoutMs = 90_000,
      ): Promise<T> => {
        const outcome = await waitOrExit(proc, what, condition, timeoutMs);
        if ('exited' in outcome) expect.fail(exitedMessage(what, outcome.exited));
        return outcome.value;
      };

      const classify = (s: MigrationState | undefined): KillPoint => {
        if (!s?.copied) return s && s.parts > 0 && s.partsDone === s.parts ? 'post-data' : 'copy';
        if (s.requests.includes('running')) return 'cutover';
        return s.spoolRows > 0 ? 'drain' : 'replay';
      };

      writer = startWriter(uris.source, {
        random: createRandom(SEED ^ 0x5bd1e995),
        prefilled: PREFILLED_ROWS,
      });
      pgbench = startPgbench(pair.source, 'chaos', ['-n', '-c', '1', '-R', '100', '-T', '3600']);

      // The plan: copy and spool kills mixed (as many as the copy lasts), one in post-data, one at the spool
      // drain, then live replay; the cutover kills come after the writers stop. Copy kills that find the copy
      // already finished become replay kills, so the count never drops below 20.
      const plan: KillPoint[] = [
        ...random.shuffle([...Array<KillPoint>(7).fill('copy'), ...Array<KillPoint>(3).fill('spool')]),
        'post-data',
        'drain',
        ...Array<KillPoint>(9).fill('replay'),
      ];
      const cutoverKills = 3;
      const kills: { planned: KillPoint; actual: KillPoint; detail: string }[] = [];
      const overConfirmed: string[] = [];
      const readConfirmed = async () => {
        const [slot] = await query<{ confirmed: string | null }>(
          uris.source,
          `SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text AS confirmed FROM pg_replication_slots WHERE slot_name = $1`,
          [`pg_live_migrate_${MIGRATION_ID}`],
        );
        return slot?.confirmed == null ? null : BigInt(slot.confirmed);
      };

      let proc = spawnTracked(migrateArgs);
      let before = await readState();
      /** Kills migrate, leaves it down for `downMs` (a runner coming back), then starts it with --resume. */
      const killAndResume = async (planned: KillPoint, detail: string, downMs = 0) => {
        proc.child.kill('SIGKILL');
        const result = await proc.result;
        expect(result.signal, `migrate should have died of SIGKILL:\n${tail(result.stderr)}`).toBe('SIGKILL');
        // Promise 1: the slot is never confirmed past what is durable on the target (read the slot first:
        // the target's position only grows, so the comparison holds whatever happens in between).
        const confirmed = await readConfirmed();
        const after = await readState();
        const durable = after ? laterOf(after.applied, after.spooled) : -1n;
        if (after && durable >= 0n && confirmed !== null && confirmed > durable) {
          overConfirmed.push(
            `kill #${kills.length + 1}: slot confirmed ${confirmed}, target durable ${durable} (+${confirmed - durable})`,
          );
        }
        const actual =
          planned === 'cutover'
            ? 'cutover'
            : planned === 'spool' && !after?.copied
              ? 'spool'
              : classify(after);
        kills.push({ planned, actual, detail });
        note(
          `kill #${kills.length} planned ${planned}, hit ${actual} (${detail}); parts ${after?.partsDone}/${after?.parts}, spool ${after?.spoolRows} rows, applied ${after?.applied}; down ${downMs} ms`,
        );
        await jitter(downMs);
        before = await readState();
        proc = spawnTracked([...migrateArgs, '--resume']);
      };

      for (let planned of plan) {
        const copied = before?.copied ?? false;
        if (
          copied &&
          (planned === 'copy' || planned === 'spool' || planned === 'post-data' || planned === 'drain')
        )
          planned = 'replay';
        const base = before;
        let detail = '';
        let downMs = 0;
        switch (planned) {
          case 'copy': {
            const parts = random.int(1, 2);
            const jitterMs = random.int(0, 60);
            const s = await waitWhileRunning(proc, `${parts} more copied parts`, (s) =>
              s && (s.copied || s.partsDone >= (base?.partsDone ?? 0) + parts) ? s : undefined,
            );
            await jitter(jitterMs);
            detail = `${parts} parts after resume (${s.partsDone}/${s.parts}) + ${jitterMs} ms`;
            break;
          }
          case 'spool': {
            const jitterMs = random.int(0, 150);
            const why = await waitWhileRunning(proc, 'changes spooled by this run', (s, stderr) => {
              if (/Spooling changes during the copy stopped/.test(stderr)) return 'spooler stopped';
              return s && (s.copied || s.spooled > (base?.spooled ?? -1n)) ? 'spooled' : undefined;
            });
            if (why === 'spooler stopped')
              note(
                `WARNING: the spooler of run ${kills.length + 1} gave up: ${/Spooling changes[^\n]*/.exec(proc.output().stderr)?.[0]}`,
              );
            await jitter(jitterMs);
            detail = `${why} + ${jitterMs} ms`;
            break;
          }
          case 'post-data':
            await waitWhileRunning(proc, 'every part copied', (s) =>
              s && (s.copied || (s.parts > 0 && s.partsDone === s.parts)) ? s : undefined,
            );
            detail = 'all parts copied';
            break;
          case 'drain':
            await waitWhileRunning(proc, 'the copy finished', (s) => (s?.copied ? s : undefined));
            detail = 'copy just finished';
            break;
          case 'replay': {
            // Kept down for a while now and then: the resumed replay then catches up on a backlog.
            downMs = random.pick([0, 0, 500, 1500, 3000]);
            const jitterMs = random.int(0, 2500);
            await waitWhileRunning(proc, 'live replay progress', (s) =>
              s?.copied && s.spoolRows === 0 && s.applied > (base?.applied ?? -1n) ? s : undefined,
            );
            await jitter(jitterMs);
            detail = `applied moved + ${jitterMs} ms`;
            break;
          }
          case 'cutover':
            throw new Error('cutover kills come after the writers stop');
        }
        await killAndResume(planned, detail, downMs);
      }

      // Writers stop; the replay catches up with everything they wrote.
      const writerStats = await writer.stop();
      writer = undefined;
      await pgbench.stop();
      pgbench = undefined;
      note(
        `writer: ${writerStats.transactions} transactions, ${writerStats.failed} failed, ${writerStats.uncertain} uncertain; last error ${writerStats.lastError ?? 'none'}`,
      );
      const [{ lsn: sourceLsn } = { lsn: '0' }] = await query<{ lsn: string }>(
        uris.source,
        `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text AS lsn`,
      );
      // Caught up, and reporting (the cutover command refuses a replay without a recent heartbeat).
      await waitWhileRunning(proc, 'the replay to catch up and report', (s) =>
        s?.copied && s.applied >= BigInt(sourceLsn) && s.heartbeatAgeS !== null && s.heartbeatAgeS < 2
          ? s
          : undefined,
      );

      // Cutover requested from another process, migrate killed in the middle of it, and resumed: the
      // resumed replay takes the request up again; a cutover command that gave up is asked again.
      const cutover: { proc?: CliProcess; exit?: CliResult } = {};
      const askCutover = () => {
        const c = spawnTracked(['cutover', ...common, '--checksum', '--timeout', '5min']);
        cutover.proc = c;
        cutover.exit = undefined;
        void c.result.then((r) => {
          note(`cutover command exited ${r.code}: ${tail(r.stderr, 3).replaceAll('\n', ' | ')}`);
          if (cutover.proc === c) cutover.exit = r;
        });
      };
      const gaveUp = () => cutover.exit !== undefined && cutover.exit.code !== 0;
      askCutover();
      let completedEarly: CliResult | undefined;
      for (let i = 0; i < cutoverKills && !completedEarly; i++) {
        const step = random.pick(CUTOVER_STEPS);
        const what = `cutover step '${step}'`;
        for (;;) {
          const outcome = await waitOrExit(
            proc,
            what,
            (_s, stderr) => (stderr.includes(`cutover: ${step}`) ? 'step' : gaveUp() ? 'gave up' : undefined),
            120_000,
          );
          if ('exited' in outcome) {
            // The cutover may win the race against the kill; that is fine, the kill count allows for it.
            if (outcome.exited.code !== 0) expect.fail(exitedMessage(what, outcome.exited));
            completedEarly = outcome.exited;
            note(`the cutover completed before kill at step '${step}'`);
            break;
          }
          if (outcome.value === 'step') {
            await killAndResume('cutover', `at step '${step}'`);
            break;
          }
          askCutover();
        }
      }

      const ended: { result?: CliResult } = { result: completedEarly };
      void proc.result.then((r) => {
        ended.result ??= r;
      });
      const last = await waitFor(
        () => {
          if (ended.result) return ended.result;
          if (gaveUp()) askCutover();
          return undefined;
        },
        { timeoutMs: 180_000, intervalMs: 100, what: 'the migration to complete' },
      ).catch((error: Error) => {
        throw new Error(`${error.message}\n${tail(proc.output().stderr)}\n${journal.join('\n')}`);
      });
      note(`final migrate exited ${last.code}`);
      expect(
        last.code,
        `the last migrate --resume failed:\n${tail(last.stderr, 80)}\n${journal.join('\n')}`,
      ).toBe(0);
      expect(last.stderr).toContain('Migration successfully completed');
      const lastCutover = await cutover.proc?.result;
      expect(lastCutover?.code, lastCutover?.stderr).toBe(0);
      expect(kills.length).toBeGreaterThanOrEqual(20);
      const hit = new Set(kills.map((k) => k.actual));
      note(`kills: ${kills.map((k) => k.actual).join(', ')}`);
      for (const point of ['copy', 'replay'] as const) expect(hit).toContain(point);
      // Only an unlucky race (the cutover finishing before the first kill) leaves the cutover unhit.
      if (!completedEarly) expect(hit).toContain('cutover');

      const validation = await runCli(['validate', ...common, '--checksum', '--json']);
      const report = JSON.parse(validation.stdout);
      expect(report.ok, `validate --checksum:\n${validation.stderr}`).toBe(true);
      expect(validation.code).toBe(0);

      // Every sequence number of the writer's tables once on the target, none missing, none extra.
      const diffs = await Promise.all(
        ['items', 'audit'].map((table) => diffSequences(uris.source, uris.target, table)),
      );
      note(`sequences: ${JSON.stringify(diffs.map((d) => ({ table: d.table, ...d.counts })))}`);
      for (const diff of diffs) {
        expect(diff, `${diff.table}: ${JSON.stringify(diff)}`).toMatchObject({
          counts: { missing: 0, extra: 0, duplicated: 0 },
          targetRows: diff.sourceRows,
        });
      }
      // Losing a row needs an unlucky kill; confirming the slot past the target's position is the cause,
      // and it shows at every kill.
      note(`slot confirmed past the target's durable position at ${overConfirmed.length} kills`);
      expect(overConfirmed, 'the slot was confirmed past what the target had durably applied').toEqual([]);
      // The writer's acknowledged commits are all on the source (sanity of the comparison above).
      const onSource = new Set(
        (await query<{ seq: string }>(uris.source, 'SELECT seq::text AS seq FROM audit')).map((r) =>
          Number(r.seq),
        ),
      );
      expect(writerStats.committedAuditSeqs.filter((s) => !onSource.has(s))).toEqual([]);
      expect(writerStats.committedAuditSeqs.length).toBeGreaterThan(100);

      // A killed migrate must not leave its helpers (pg_dump, pg_restore) working on either server.
      for (const uri of [uris.source, uris.target]) {
        const orphans = await query<{ app: string }>(
          uri,
          `SELECT application_name AS app FROM pg_stat_activity WHERE application_name IN ('pg_dump', 'pg_restore')`,
        );
        expect(orphans).toEqual([]);
      }
      const cleaned = await runCli(['clean', ...common, '--prune']);
      expect(cleaned.code, cleaned.stderr).toBe(0);
      note(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    },
    9 * 60_000,
  );

  // Not a SIGKILL: Ctrl-C, `kill`, a cancelled Actions job or a stopping container send SIGINT/SIGTERM,
  // which the tool handles by stopping "cleanly". That must not commit part of a source transaction.
  it('stopped with SIGTERM while it applies a large transaction, keeps none of it and resumes without duplicates', async () => {
    const db = await freshDatabases(pair, 'chaos_term');
    await query(
      db.source,
      'CREATE TABLE bulk (seq bigint NOT NULL, note text); CREATE TABLE keyed (id int PRIMARY KEY)',
    );
    const termCommon = [
      '--source',
      db.source,
      '--target',
      db.target,
      '--dir',
      `${dir}-term`,
      '--migration-id',
      'term',
    ];
    const args = ['migrate', ...termCommon, '--lag-interval', '1s'];
    const tail = (text: string) => text.trimEnd().split('\n').slice(-30).join('\n');
    const count = async () =>
      (
        await query<{ n: number; d: number }>(
          db.target,
          'SELECT count(*)::int AS n, count(DISTINCT seq)::int AS d FROM bulk',
        )
      )[0];
    const track = (proc: CliProcess) => {
      running.add(proc);
      void proc.result.then(() => running.delete(proc));
      return proc;
    };
    try {
      const first = track(spawnCli(args));
      await waitFor(
        () => /Replay \(apply\) streaming from/.test(first.output().stderr) || first.child.exitCode !== null,
        {
          timeoutMs: 120_000,
          what: 'live replay',
        },
      );
      // A small transaction first, so this session has committed a group before the big one arrives.
      await query(db.source, `INSERT INTO bulk VALUES (0, 'small')`);
      await waitFor(async () => (await count())?.n === 1, {
        timeoutMs: 60_000,
        what: 'the small transaction',
      });
      await query(db.source, `INSERT INTO bulk SELECT g, 'big' FROM generate_series(1, 300000) g`);
      await waitFor(
        async () =>
          (
            await query(
              db.target,
              `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pg-live-migrate'
                  AND state = 'active' AND (query LIKE 'INSERT INTO "public"."bulk"%' OR query LIKE 'COPY "public"."bulk"%')`,
            )
          ).length > 0,
        { timeoutMs: 120_000, intervalMs: 20, what: 'the big transaction being applied' },
      );
      first.child.kill('SIGTERM');
      const stopped = await first.result;
      expect(stopped.code, tail(stopped.stderr)).toBe(4);
      expect(stopped.stderr).toContain('Replay stopped');
      const [position] = await query<{ applied: string }>(
        db.target,
        `SELECT applied_lsn::text AS applied FROM _pg_live_migrate.replay WHERE migration_id = 'term'`,
      );
      // Soft: when this fails, the resume below still shows what it leads to (duplicates).
      expect
        .soft(
          await count(),
          `rows of the transaction being applied were committed at SIGTERM (recorded position ${position?.applied}, still before that transaction)`,
        )
        .toEqual({ n: 1, d: 1 });

      const resumed = track(spawnCli([...args, '--resume']));
      const [{ lsn } = { lsn: '0' }] = await query<{ lsn: string }>(
        db.source,
        `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text AS lsn`,
      );
      await waitFor(
        async () => {
          if (resumed.child.exitCode !== null) return true;
          const [r] = await query<{ a: string }>(
            db.target,
            `SELECT (applied_lsn - '0/0'::pg_lsn)::text AS a FROM _pg_live_migrate.replay WHERE migration_id = 'term'`,
          );
          return BigInt(r?.a ?? '0') >= BigInt(lsn);
        },
        { timeoutMs: 180_000, intervalMs: 250, what: 'the resumed replay to catch up' },
      );
      expect(resumed.child.exitCode, tail(resumed.output().stderr)).toBeNull();
      expect(await count(), 'every source row exactly once').toEqual({ n: 300001, d: 300001 });
    } finally {
      for (const proc of running) proc.child.kill('SIGKILL');
      await Promise.all([...running].map((p) => p.result));
      await runCli(['clean', ...termCommon, '--prune']);
    }
  }, 300_000);
});

/** The random part of a kill point (not a wait for a condition: the conditions come before it). */
function jitter(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The later of two positions (bigints, so not Math.max). */
function laterOf(a: bigint, b: bigint): bigint {
  if (a > b) return a;
  return b;
}
