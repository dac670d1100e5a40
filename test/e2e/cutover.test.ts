// Cutover through the built CLI: refused above --max-lag unless forced, fenced roles read-only on the source
// afterwards, a failed cutover unfences (and a resumed replay cuts over), SIGUSR1 to migrate asks for a cutover.
import { rm } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/core/lsn';
import type { MigrationStatus } from '../../src/workflows/status';
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

interface Migration {
  uris: { source: string; target: string };
  args: string[];
  dir: string;
  /** The replaying process: `migrate`, or `replay --resume` after it ended. */
  migrate: CliProcess;
  exited: () => boolean;
}

describe('cutover', () => {
  let pair: Pair;
  const migrations: Migration[] = [];

  /** Runs `args` as the migration's replaying process and waits until the target has caught up. */
  const startReplaying = async (m: Migration, args: string[]): Promise<void> => {
    const cli = spawnCli([...args, ...m.args, '--lag-interval', '1s']);
    let exited = false;
    void cli.result.then(() => {
      exited = true;
    });
    m.migrate = cli;
    m.exited = () => exited;
    const seen = await waitFor(
      () => {
        const log = cli.output().stderr;
        if (log.includes('Target has caught up')) return 'caught up';
        return exited || /^error /m.test(log) ? 'failed' : undefined;
      },
      { timeoutMs: 60_000, what: `${args[0]} to catch up` },
    );
    expect(seen, cli.output().stderr).toBe('caught up');
  };

  /** A database with `schema` on the source, and `migrate` running on it until the target has caught up. */
  const startMigration = async (name: string, schema: string): Promise<Migration> => {
    const uris = await freshDatabases(pair, name);
    await query(uris.source, schema);
    const dir = `${pair.target.dataDir}-${name}`;
    const args = ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', name];
    const m = { uris, args, dir } as Migration;
    migrations.push(m);
    await startReplaying(m, ['migrate', '--table-jobs', '2']);
    return m;
  };

  const status = async (m: Migration): Promise<MigrationStatus> =>
    JSON.parse((await runCli(['status', '--json', ...m.args])).stdout) as MigrationStatus;

  /** A client of `role` on the source database, with errors kept as values (a terminated session must not crash). */
  const connectAs = async (m: Migration, role: string): Promise<pg.Client> => {
    const client = new pg.Client({
      connectionString: m.uris.source.replace('postgres@', `${role}@`),
      application_name: 'plm-test-app',
    });
    client.on('error', () => undefined);
    await client.connect();
    return client;
  };
  /** What an INSERT by `role` on the source does: 'ok' or the SQLSTATE it fails with. */
  const insertAs = async (m: Migration, role: string, sql: string): Promise<string> => {
    const client = await connectAs(m, role);
    try {
      await client.query(sql);
      return 'ok';
    } catch (error) {
      return (error as { code?: string }).code ?? String(error);
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    pair = await startPair();
    await query(
      pair.source.uri(),
      `CREATE ROLE app_a LOGIN; CREATE ROLE app_b LOGIN; CREATE ROLE app_untouched LOGIN`,
    );
  });

  afterAll(async () => {
    try {
      for (const m of migrations) {
        m.migrate.child.kill('SIGKILL');
        await m.migrate.result;
        await runCli(['clean', ...m.args, '--prune']);
        await rm(m.dir, { recursive: true, force: true });
      }
      await assertNoLeaks(pair);
    } finally {
      await pair.stop();
    }
  });

  it('refuses while the lag is above --max-lag, then with --force drains, fences the roles and completes', async () => {
    const m = await startMigration(
      'a',
      `CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text);
       INSERT INTO orders SELECT g, g, 'n' FROM generate_series(1, 1000) g;
       GRANT ALL ON orders TO app_a, app_untouched`,
    );
    const before = await connectAs(m, 'app_a');
    // One large transaction. While the replay applies it (its target session then holds a lock on the
    // table), all of its WAL is lag: none of it is on the target before its commit is.
    const walAt = async () =>
      parseLsn(
        (await query<{ l: string }>(m.uris.source, 'SELECT pg_current_wal_insert_lsn()::text AS l'))[0]?.l ??
          '0/0',
      );
    const startLsn = await walAt();
    await query(
      m.uris.source,
      `INSERT INTO orders SELECT g, g, repeat('x', 50) FROM generate_series(1001, 400000) g`,
    );
    const txnBytes = Number((await walAt()) - startLsn);
    expect(txnBytes).toBeGreaterThan(20 * 1024 * 1024);
    await waitFor(
      async () =>
        (
          await query(
            m.uris.target,
            `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'pg-live-migrate' AND l.relation = 'public.orders'::regclass`,
          )
        ).length > 0,
      { timeoutMs: 60_000, intervalMs: 20, what: 'the replay to start applying the large transaction' },
    );
    await waitFor(async () => ((await status(m)).lagBytes ?? 0) >= 0.9 * txnBytes, {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: `status to count the ${txnBytes} bytes of the transaction being applied as lag`,
    });

    const refused = await runCli(['cutover', ...m.args, '--max-lag', '1MB', '--fence-roles', 'app_a']);
    expect(refused.code, refused.stderr).toBe(4);
    expect(refused.stderr).toMatch(
      /error CUTOVER_LAG_TOO_HIGH: Replay lag is [\d.]+ MB \([\d.]+ s\), above --max-lag 1\.0 MB/,
    );
    expect(refused.stderr).toContain('--force');
    // Refused before anything happened: the role still writes and the replay goes on.
    expect(await insertAs(m, 'app_a', `INSERT INTO orders VALUES (-1, 0, 'before cutover')`)).toBe('ok');
    expect(m.exited()).toBe(false);

    const cutover = await runCli([
      'cutover',
      ...m.args,
      '--max-lag',
      '1MB',
      '--force',
      '--fence-roles',
      'app_a',
      '--checksum',
      '--timeout',
      '60s',
    ]);
    expect(cutover.code, cutover.stderr).toBe(0);
    expect(cutover.stderr).toContain('Migration successfully completed');
    const done = await m.migrate.result;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stderr).toContain('Fenced roles app_a');
    expect(done.stderr).toContain('Validation passed');

    // The fenced role's open session was ended and new ones cannot write; other roles are untouched.
    await expect(before.query('SELECT 1')).rejects.toThrow();
    await before.end().catch(() => undefined);
    expect(await insertAs(m, 'app_a', `INSERT INTO orders VALUES (-2, 0, 'after cutover')`)).toBe('25006');
    expect(await insertAs(m, 'app_untouched', `INSERT INTO orders VALUES (-3, 0, 'other role')`)).toBe('ok');
    expect(await query(m.uris.target, 'SELECT count(*)::int AS n FROM orders')).toEqual([{ n: 400_001 }]);
    expect((await status(m)).phase).toBe('done');
  }, 180_000);

  it('unfences the roles when the cutover fails, and completes when asked again after a resume', async () => {
    const m = await startMigration(
      'b',
      `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;
       GRANT ALL ON t TO app_b`,
    );
    // A row only the target has: the validation after the drain must fail.
    await query(m.uris.target, `INSERT INTO t VALUES (1000, 'only on the target')`);
    const failed = await runCli(['cutover', ...m.args, '--fence-roles', 'app_b', '--timeout', '60s']);
    expect(failed.code, failed.stderr).toBe(5);
    expect(failed.stderr).toContain('error VALIDATION_MISMATCH: Cutover failed');
    expect(failed.stderr).toMatch(
      /hint: The source was unfenced\. .*replay --resume.*ask for the cutover again/,
    );
    // The replaying process reports the mismatch and ends (exit 5, validation).
    const ended = await m.migrate.result;
    expect(ended.code, ended.stderr).toBe(5);
    expect(ended.stderr).toContain('row counts differ: 100 on the source, 101 on the target');

    // Unfenced: the role writes again, and no read-only default is left on it.
    expect(await insertAs(m, 'app_b', `INSERT INTO t VALUES (101, 'after the failed cutover')`)).toBe('ok');
    expect(
      await query(
        m.uris.source,
        `SELECT count(*)::int AS n FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'app_b'`,
      ),
    ).toEqual([{ n: 0 }]);

    // Fix the cause, resume the replay (the write made meanwhile arrives), ask again.
    await query(m.uris.target, 'DELETE FROM t WHERE id = 1000');
    await startReplaying(m, ['replay', '--resume']);
    await waitFor(
      async () => (await query(m.uris.target, 'SELECT count(*)::int AS n FROM t WHERE id = 101'))[0]?.n === 1,
      { timeoutMs: 60_000, intervalMs: 200, what: 'the resumed replay to apply the write' },
    );
    const again = await runCli([
      'cutover',
      ...m.args,
      '--fence-roles',
      'app_b',
      '--checksum',
      '--timeout',
      '60s',
    ]);
    expect(again.code, again.stderr).toBe(0);
    const done = await m.migrate.result;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stderr).toContain('Migration successfully completed');
    expect(await insertAs(m, 'app_b', `INSERT INTO t VALUES (102, 'fenced')`)).toBe('25006');
    expect((await status(m)).phase).toBe('done');
  });

  it('completes and exits when a transaction commits past the end position (reported, not applied)', async () => {
    const m = await startMigration(
      'd',
      `CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g`,
    );
    // An unfenced writer's transaction, open when the cutover starts and committed right after its end
    // position is taken: the replay holds it there. An update, so the row counts still match.
    const writer = new pg.Client({ connectionString: m.uris.source });
    await writer.connect();
    try {
      await writer.query('BEGIN');
      await writer.query('UPDATE t SET v = v + 1 WHERE id = 1');
      const cutover = spawnCli(['cutover', ...m.args, '--timeout', '60s']);
      await waitFor(() => m.migrate.output().stderr.includes('cutover: requested') || undefined, {
        timeoutMs: 30_000,
        intervalMs: 10,
        what: 'the replay to take the cutover request',
      });
      await writer.query('COMMIT');
      const requested = await cutover.result;
      expect(requested.code, requested.stderr).toBe(0);
      const done = await Promise.race([
        m.migrate.result,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000)),
      ]);
      expect(
        done,
        `migrate still running 30 s after the cutover:\n${m.migrate.output().stderr}`,
      ).toBeDefined();
      expect(done?.code, done?.stderr).toBe(0);
      expect(done?.stderr).toContain('the source received writes after the cutover end position');
      expect(done?.stderr).toContain('Migration successfully completed');
      // Held, not applied.
      expect(await query(m.uris.target, 'SELECT v FROM t WHERE id = 1')).toEqual([{ v: 0 }]);
    } finally {
      await writer.end();
    }
  });

  it('cuts over when the migrate process receives SIGUSR1', async () => {
    const m = await startMigration(
      'c',
      `CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text);
       INSERT INTO events (what) SELECT 'e' || g FROM generate_series(1, 100) g`,
    );
    await query(m.uris.source, `INSERT INTO events (what) SELECT 'late ' || g FROM generate_series(1, 50) g`);
    const [{ l }] = (await query<{ l: string }>(
      m.uris.source,
      'SELECT pg_current_wal_insert_lsn()::text AS l',
    )) as [{ l: string }];
    m.migrate.child.kill('SIGUSR1');
    const done = await Promise.race([
      m.migrate.result,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 60_000)),
    ]);
    expect(done, `migrate still running 60 s after SIGUSR1:\n${m.migrate.output().stderr}`).toBeDefined();
    expect(done?.code, done?.stderr).toBe(0);
    expect(done?.stderr).toContain('Cutover requested from this process');
    expect(done?.stderr).toMatch(/cutover: drained \(applied up to [0-9A-F]+\/[0-9A-F]+\)/);
    expect(done?.stderr).toContain('Migration successfully completed');
    const s = await status(m);
    expect(s.phase).toBe('done');
    expect(parseLsn(s.replay?.appliedLsn ?? '0/0')).toBeGreaterThanOrEqual(parseLsn(l));
    // Sequences were set at cutover: the target continues after the source's last identity value.
    expect(
      await query(
        m.uris.target,
        `INSERT INTO events (what) VALUES ('on the target') RETURNING id::int AS id`,
      ),
    ).toEqual([{ id: 151 }]);
  });
});
