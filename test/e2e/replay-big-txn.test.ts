// One source transaction of 1,000,000 rows (an INSERT … SELECT, then an UPDATE of every row) replays with
// the migrate process's memory bounded: its peak RSS (VmHWM) stays under 300 MB and every row arrives. A
// replay stopped in the middle of a large transaction resumes with each of its rows exactly once.
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/core/lsn';
import {
  assertNoLeaks,
  type CliProcess,
  freshDatabases,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  waitFor,
} from '../helpers/clusters';

const ROWS = 1_000_000;
const LIMIT_BYTES = 300 * 1024 * 1024;
/** Generous for a loaded 2-core machine; about 10 s (insert) and 30 s (update) when it is not. */
const SLOW_TEST_MS = 240_000;

/** A /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes. */
function memoryOf(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN) * 1024;
}

describe('a 1,000,000-row transaction during replay', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let common: string[];
  let dir: string;
  let migrate: CliProcess;
  let pid: number;
  const samples: number[] = [];
  let sampler: NodeJS.Timeout | undefined;
  let exited = false;

  /** Waits until the replay has applied everything the source wrote so far (read from `status --json`). */
  const waitApplied = async (what: string) => {
    const [{ l }] = (await query<{ l: string }>(
      uris.source,
      'SELECT pg_current_wal_insert_lsn()::text AS l',
    )) as [{ l: string }];
    const lsn = parseLsn(l);
    const outcome = await waitFor(
      async () => {
        if (exited) return 'migrate exited';
        const status = JSON.parse((await runCli(['status', '--json', ...common])).stdout);
        const applied = status.replay?.appliedLsn as string | undefined;
        return applied !== undefined && parseLsn(applied) >= lsn ? 'applied' : undefined;
      },
      { timeoutMs: 200_000, intervalMs: 500, what },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; migrate's log:\n${migrate.output().stderr}`);
    });
    expect(outcome, migrate.output().stderr).toBe('applied');
  };

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'big');
    await query(
      uris.source,
      `CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, note text); CREATE TABLE burst (n int);
       CREATE TABLE wide (id int PRIMARY KEY, body text)`,
    );
    dir = `${pair.target.dataDir}-work`;
    common = ['--source', uris.source, '--target', uris.target, '--dir', dir];
    migrate = spawnCli(['migrate', ...common, '--lag-interval', '1s', '--table-jobs', '1']);
    pid = migrate.child.pid ?? 0;
    void migrate.result.then(() => {
      exited = true;
    });
    const seen = await waitFor(
      () => {
        const log = migrate.output().stderr;
        if (log.includes('Target has caught up')) return 'caught up';
        return exited || /^error /m.test(log) ? 'failed' : undefined;
      },
      { timeoutMs: 60_000, what: 'the replay to catch up after the copy' },
    );
    expect(seen, migrate.output().stderr).toBe('caught up');
    sampler = setInterval(() => {
      if (!exited) samples.push(memoryOf(pid, 'VmRSS'));
    }, 250);
  });

  afterAll(async () => {
    try {
      clearInterval(sampler);
      migrate?.child.kill('SIGKILL');
      await migrate?.result;
      await runCli(['clean', ...common, '--prune']);
      await rm(dir, { recursive: true, force: true });
      await assertNoLeaks(pair);
    } finally {
      await pair.stop();
    }
  });

  it(
    'replays a single 1,000,000-row INSERT … SELECT with the process under 300 MB',
    async () => {
      await query(uris.source, `INSERT INTO big SELECT g, g, 'row ' || g FROM generate_series(1, ${ROWS}) g`);
      await waitApplied('the 1,000,000-row insert to be applied');
      expect(await query(uris.target, 'SELECT count(*)::int AS n, sum(v)::text AS s FROM big')).toEqual([
        { n: ROWS, s: String((ROWS * (ROWS + 1)) / 2) },
      ]);
      expect(memoryOf(pid, 'VmHWM')).toBeLessThan(LIMIT_BYTES);
    },
    SLOW_TEST_MS,
  );

  it(
    'replays a transaction of 80 rows of 1.5 MB each (120 MB) with the process still under 300 MB',
    async () => {
      // Far fewer rows than a batch holds: only the batch's byte limit keeps them from piling up.
      await query(
        uris.source,
        `INSERT INTO wide SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 47000) i)
           FROM generate_series(1, 80) g`,
      );
      await waitApplied('the wide rows to be applied');
      const digest = "SELECT count(*)::int AS n, md5(string_agg(md5(body), '' ORDER BY id)) AS h FROM wide";
      const [target] = await query<{ n: number; h: string }>(uris.target, digest);
      expect(target).toEqual((await query(uris.source, digest))[0]);
      expect(target?.n).toBe(80);
      expect(memoryOf(pid, 'VmHWM')).toBeLessThan(LIMIT_BYTES);
    },
    SLOW_TEST_MS,
  );

  it(
    'replays a single UPDATE of all 1,000,000 rows with the process still under 300 MB',
    async () => {
      await query(uris.source, `UPDATE big SET v = v + 1, note = NULL`);
      await waitApplied('the 1,000,000-row update to be applied');
      expect(
        await query(
          uris.target,
          'SELECT count(*)::int AS n, sum(v)::text AS s, count(note)::int AS notes FROM big',
        ),
      ).toEqual([{ n: ROWS, s: String((ROWS * (ROWS + 1)) / 2 + ROWS), notes: 0 }]);
      clearInterval(sampler);
      const peak = memoryOf(pid, 'VmHWM');
      expect(peak, `samples (MB): ${samples.map((b) => Math.round(b / 2 ** 20)).join(' ')}`).toBeLessThan(
        LIMIT_BYTES,
      );
      // VmHWM is the kernel's peak; the samples (VmRSS every 250 ms) are a second, independent look at it.
      expect(Math.max(...samples)).toBeLessThan(LIMIT_BYTES);
      expect(samples.length).toBeGreaterThan(4);
    },
    SLOW_TEST_MS,
  );

  it(
    'rolls back a partly applied transaction when stopped (SIGTERM) and applies it exactly once on resume',
    async () => {
      const burst = 300_000;
      // A transaction applied first in this session, so the stop finds an earlier commit position to write.
      await query(uris.source, 'INSERT INTO burst VALUES (0)');
      await waitApplied('a small transaction to be applied');
      await query(uris.source, `INSERT INTO burst SELECT generate_series(1, ${burst})`);
      // The replay is inside the transaction once its target session holds a lock on the table.
      await waitFor(
        async () =>
          (
            await query(
              uris.target,
              `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'pg-live-migrate' AND l.relation = 'public.burst'::regclass`,
            )
          ).length > 0,
        { timeoutMs: 60_000, intervalMs: 20, what: 'the replay to start applying the transaction' },
      );
      migrate.child.kill('SIGTERM');
      const stopped = await migrate.result;
      expect(stopped.code, stopped.stderr).toBe(4);
      expect(stopped.stderr).toContain('Replay stopped; resume with --resume');
      // Nothing of the unfinished transaction is on the target, and the recorded position is before it.
      expect(await query(uris.target, 'SELECT count(*)::int AS n FROM burst')).toEqual([{ n: 1 }]);

      migrate = spawnCli(['replay', ...common, '--lag-interval', '1s']);
      exited = false;
      void migrate.result.then(() => {
        exited = true;
      });
      await waitApplied('the resumed replay to apply the transaction');
      expect(
        await query(
          uris.target,
          'SELECT count(*)::int AS n, count(DISTINCT n)::int AS d, max(n) AS m FROM burst',
        ),
      ).toEqual([{ n: burst + 1, d: burst + 1, m: burst }]);
    },
    SLOW_TEST_MS,
  );
});
