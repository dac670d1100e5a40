import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkAndStop,
  freshDatabases,
  type Pair,
  pgbenchInit,
  query,
  runCli,
  spawnCli,
  startPair,
  tableDigestSql,
  waitFor,
} from '../helpers/clusters';

describe('a copy killed with SIGKILL and resumed inside the held snapshot', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'bench');
    await pgbenchInit(pair.source, 'bench', 4);
    dir = `${pair.target.dataDir}-work`;
  });

  afterAll(async () => {
    await runCli(['clean', '--source', uris.source, '--target', uris.target, '--dir', dir, '--prune']);
    await checkAndStop(pair);
  });

  it('copies only the unfinished parts and ends equal to the source at the snapshot', async () => {
    const common = ['--source', uris.source, '--target', uris.target, '--dir', dir];
    const holder = spawnCli(['snapshot', ...common]);
    const snapshotName = await waitFor(() => /^\S+-\S+-\S+$/m.exec(holder.output().stdout)?.[0], {
      timeoutMs: 20_000,
      what: 'the snapshot name on stdout',
    });
    // Writes after the snapshot must not reach the target.
    await query(uris.source, `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 1000`);
    await query(
      uris.source,
      `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, now())`,
    );

    const args = [
      'copy',
      ...common,
      '--table-jobs',
      '1',
      '--index-jobs',
      '2',
      '--split-tables-larger-than',
      '2MB',
    ];
    const first = spawnCli(args);
    const doneBeforeKill = await waitFor(
      async () => {
        const rows = await query<{ n: number }>(
          uris.target,
          'SELECT count(*)::int AS n FROM _pg_live_migrate.copy_part WHERE done_at IS NOT NULL',
        ).catch(() => []);
        const n = rows[0]?.n ?? 0;
        return n >= 3 ? n : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 20, what: 'three finished parts' },
    );
    first.child.kill('SIGKILL');
    const killed = await first.result;
    expect(killed.signal).toBe('SIGKILL');

    const before = await query<{ part_id: number; done_at: string }>(
      uris.target,
      'SELECT part_id, done_at::text FROM _pg_live_migrate.copy_part WHERE done_at IS NOT NULL ORDER BY part_id',
    );
    expect(before.length).toBeGreaterThanOrEqual(doneBeforeKill);
    const total = await query<{ n: number }>(
      uris.target,
      'SELECT count(*)::int AS n FROM _pg_live_migrate.copy_part',
    );
    expect(before.length).toBeLessThan(total[0]?.n ?? 0);

    const resumed = await runCli([...args, '--resume']);
    expect(resumed.stderr).toContain(
      `Resuming: ${before.length} of ${total[0]?.n} parts are already on the target`,
    );
    expect(resumed.code).toBe(0);

    // Parts finished before the kill were not copied again: their done marks are untouched.
    const after = await query<{ part_id: number; done_at: string }>(
      uris.target,
      `SELECT part_id, done_at::text FROM _pg_live_migrate.copy_part WHERE part_id = ANY($1::int[]) ORDER BY part_id`,
      [before.map((p) => p.part_id)],
    );
    expect(after).toEqual(before);

    // The snapshot holder lets go once the copy is done.
    const held = await holder.result;
    expect(held.code).toBe(0);

    // Target equals the source as of the snapshot: the later writes are absent.
    for (const [table, key] of [
      ['pgbench_accounts', 'aid'],
      ['pgbench_branches', 'bid'],
      ['pgbench_tellers', 'tid'],
      ['pgbench_history', 'mtime'],
    ] as const) {
      const [target] = await query(uris.target, tableDigestSql(table, key));
      const [source] = await query(uris.source, tableDigestSql(table, key));
      if (table === 'pgbench_accounts' || table === 'pgbench_history') expect(target).not.toEqual(source);
      else expect(target).toEqual(source);
    }
    const [{ n: history } = { n: -1 }] = await query<{ n: number }>(
      uris.target,
      'SELECT count(*)::int AS n FROM pgbench_history',
    );
    expect(history).toBe(0);
    const [{ s } = { s: -1 }] = await query<{ s: string }>(
      uris.target,
      'SELECT sum(abalance)::text AS s FROM pgbench_accounts',
    );
    expect(s).toBe('0');
    expect(snapshotName).toMatch(/-/);
  });

  it('stops promptly on SIGINT with COPY_INTERRUPTED (exit 4), records why, and resumes to the end', async () => {
    const db = await freshDatabases(pair, 'interrupted');
    await pgbenchInit(pair.source, 'interrupted', 3);
    const workDir = `${dir}-2`;
    const common = [
      '--source',
      db.source,
      '--target',
      db.target,
      '--dir',
      workDir,
      '--migration-id',
      'sigint',
    ];
    const holder = spawnCli(['snapshot', ...common]);
    await waitFor(() => /^\S+-\S+-\S+$/m.exec(holder.output().stdout)?.[0], {
      timeoutMs: 20_000,
      what: 'the snapshot name',
    });
    const args = ['copy', ...common, '--table-jobs', '1', '--split-tables-larger-than', '1MB'];
    const first = spawnCli(args);
    await waitFor(
      async () => {
        const rows = await query<{ n: number }>(
          db.target,
          'SELECT count(*)::int AS n FROM _pg_live_migrate.copy_part WHERE done_at IS NOT NULL',
        ).catch(() => []);
        return (rows[0]?.n ?? 0) >= 2 || undefined;
      },
      { timeoutMs: 60_000, intervalMs: 20, what: 'two finished parts' },
    );
    const stoppedAt = Date.now();
    first.child.kill('SIGINT');
    const stopped = await first.result;
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
    expect(stopped.code).toBe(4);
    expect(stopped.stderr).toMatch(/error COPY_INTERRUPTED: The copy was stopped with \d+ of \d+ parts/);
    const status = JSON.parse((await runCli(['status', '--json', ...common])).stdout);
    expect(status.error).toMatchObject({ code: 'COPY_INTERRUPTED' });
    expect(status.tables.done).toBeLessThan(status.tables.total);

    const resumed = await runCli([...args, '--resume']);
    expect(resumed.code).toBe(0);
    expect((await holder.result).code).toBe(0);
    const digest = tableDigestSql('pgbench_accounts', 'aid');
    expect(await query(db.target, digest)).toEqual(await query(db.source, digest));
    const after = JSON.parse((await runCli(['status', '--json', ...common])).stdout);
    expect(after).toMatchObject({ copyFinished: true, error: null });
    await runCli(['clean', ...common, '--prune']);
  });

  it('shares one copy plan with a helper runner (--parts-only): each part copied once, by one of them', async () => {
    const db = await freshDatabases(pair, 'shared');
    await pgbenchInit(pair.source, 'shared', 4);
    const common = ['--source', db.source, '--target', db.target, '--migration-id', 'shared'];
    // The helper starts first: it waits for the coordinator's plan, then claims parts next to it.
    const helperRun = spawnCli(['copy', ...common, '--dir', `${dir}-h`, '--parts-only', '--table-jobs', '1']);
    const coordinator = spawnCli([
      'copy',
      ...common,
      '--dir',
      `${dir}-c`,
      '--table-jobs',
      '1',
      '--split-tables-larger-than',
      '1MB',
    ]);
    const helper = await helperRun.result;
    expect(helper.code, helper.stderr).toBe(0);
    const helped = Number(/Helper done: copied (\d+) parts/.exec(helper.stderr)?.[1] ?? -1);
    const finished = await coordinator.result;
    expect(finished.code, finished.stderr).toBe(0);
    const [plan] = await query<{ parts: number; done: number }>(
      db.target,
      `SELECT count(*)::int AS parts, count(done_at)::int AS done FROM _pg_live_migrate.copy_part WHERE migration_id = 'shared'`,
    );
    expect(plan?.done).toBe(plan?.parts);
    expect(helped).toBeGreaterThan(0);
    expect(helped).toBeLessThan(plan?.parts ?? 0);
    const digest = tableDigestSql('pgbench_accounts', 'aid');
    expect(await query(db.target, digest)).toEqual(await query(db.source, digest));
    await runCli(['clean', ...common, '--dir', `${dir}-c`, '--prune']);
  });
});
