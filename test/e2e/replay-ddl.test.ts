// Schema changes on the source during replay: the replay stops with an explanation and loses nothing, and
// resumes once the target has the same change. A table without a key stays writable on the source.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/core/lsn';
import type { MigrationStatus } from '../../src/workflows/status';
import {
  assertNoLeaks,
  type CliProcess,
  type CliResult,
  freshDatabases,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  waitFor,
} from '../helpers/clusters';

describe('DDL on the source during replay', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let common: string[];
  let dir: string;
  let replay: CliProcess | undefined;

  /** Starts `command` (migrate or replay) and waits until it reports that the target has caught up. */
  const startReplay = async (command: 'migrate' | 'replay'): Promise<CliProcess> => {
    const cli = spawnCli([command, ...common, '--lag-interval', '1s', '--table-jobs', '2']);
    replay = cli;
    let exited = false;
    void cli.result.then(() => {
      exited = true;
    });
    const seen = await waitFor(
      () => {
        const log = cli.output().stderr;
        if (log.includes('Target has caught up')) return 'caught up';
        return exited || /^error /m.test(log) ? 'failed' : undefined;
      },
      { timeoutMs: 60_000, what: `${command} to catch up` },
    );
    expect(seen, cli.output().stderr).toBe('caught up');
    return cli;
  };

  /** Waits for the replay to stop by itself; it must exit 4 (runtime) with this error code. */
  const expectStop = async (cli: CliProcess, code: string): Promise<CliResult> => {
    const result = await Promise.race([
      cli.result,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 60_000)),
    ]);
    expect(result, `still running after 60 s:\n${cli.output().stderr}`).toBeDefined();
    expect(result?.code, result?.stderr).toBe(4);
    expect(result?.stderr).toContain(`error ${code}: `);
    return result as CliResult;
  };

  const waitApplied = async (cli: CliProcess) => {
    const [row] = await query<{ l: string }>(uris.source, 'SELECT pg_current_wal_insert_lsn()::text AS l');
    const lsn = parseLsn(row?.l ?? '0/0');
    await waitFor(
      async () => {
        const status = JSON.parse((await runCli(['status', '--json', ...common])).stdout) as MigrationStatus;
        return parseLsn(status.replay?.appliedLsn ?? '0/0') >= lsn;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the replay to apply the source changes' },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; log:\n${cli.output().stderr}`);
    });
  };

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'ddl');
    await query(
      uris.source,
      `CREATE TABLE items (id int PRIMARY KEY, v int, gone text);
       INSERT INTO items SELECT g, g, 'g' FROM generate_series(1, 100) g;
       CREATE TABLE keyless (id int, note text);
       INSERT INTO keyless SELECT g, 'old ' || g FROM generate_series(1, 10) g;
       CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
       CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
       INSERT INTO events VALUES (1, '2024-06-01')`,
    );
    dir = `${pair.target.dataDir}-work`;
    common = ['--source', uris.source, '--target', uris.target, '--dir', dir];
    await startReplay('migrate');
  });

  afterAll(async () => {
    try {
      replay?.child.kill('SIGKILL');
      await replay?.result;
      await runCli(['clean', ...common, '--prune']);
      await rm(dir, { recursive: true, force: true });
      await assertNoLeaks(pair);
    } finally {
      await pair.stop();
    }
  });

  it('keeps UPDATE and DELETE working on the source for a table without a key, and replays its inserts', async () => {
    const cli = replay as CliProcess;
    // Published for INSERT and TRUNCATE only: these statements must not fail on the source.
    await query(
      uris.source,
      `UPDATE keyless SET note = 'changed' WHERE id <= 3; DELETE FROM keyless WHERE id > 8`,
    );
    await query(uris.source, `INSERT INTO keyless SELECT g, 'new ' || g FROM generate_series(11, 15) g`);
    await waitApplied(cli);
    expect(
      await query(uris.target, `SELECT id, note FROM keyless WHERE note LIKE 'new %' ORDER BY id`),
    ).toEqual([11, 12, 13, 14, 15].map((id) => ({ id, note: `new ${id}` })));
    // Their UPDATE/DELETE are not replayed (documented): the target keeps the old values.
    expect(await query(uris.target, `SELECT count(*)::int AS n FROM keyless WHERE note = 'changed'`)).toEqual(
      [{ n: 0 }],
    );
    expect(cli.output().stderr).not.toContain('connection lost');
  });

  it('stops on a column added on the source, names it, and resumes without loss once the target has it', async () => {
    await query(
      uris.source,
      `ALTER TABLE items ADD COLUMN extra text; INSERT INTO items VALUES (101, 101, 'g', 'x')`,
    );
    const stopped = await expectStop(replay as CliProcess, 'REPLAY_SCHEMA_CHANGED');
    expect(stopped.stderr).toContain(
      'table public.items has column(s) extra on the source but not on the target',
    );
    expect(stopped.stderr).toMatch(/hint: Apply the same change on the target .*nothing is lost/);
    expect(await query(uris.target, 'SELECT count(*)::int AS n FROM items WHERE id = 101')).toEqual([
      { n: 0 },
    ]);

    await query(uris.target, 'ALTER TABLE items ADD COLUMN extra text');
    const resumed = await startReplay('replay');
    await waitApplied(resumed);
    expect(await query(uris.target, 'SELECT id, v, extra FROM items WHERE id = 101')).toEqual([
      { id: 101, v: 101, extra: 'x' },
    ]);
  });

  it('stops on a changed column type and on a dropped column', async () => {
    await query(
      uris.source,
      `ALTER TABLE items ALTER COLUMN v TYPE bigint; UPDATE items SET v = 5000000000 WHERE id = 1`,
    );
    const typeChanged = await expectStop(replay as CliProcess, 'REPLAY_SCHEMA_CHANGED');
    expect(typeChanged.stderr).toContain('column public.items.v changed type on the source');
    await query(uris.target, 'ALTER TABLE items ALTER COLUMN v TYPE bigint');

    await query(uris.source, `ALTER TABLE items DROP COLUMN gone; UPDATE items SET v = 7 WHERE id = 2`);
    // The resumed replay applies the type change's update, then meets the drop.
    replay = spawnCli(['replay', ...common, '--lag-interval', '1s']);
    const dropped = await expectStop(replay, 'REPLAY_SCHEMA_CHANGED');
    expect(dropped.stderr).toContain('table public.items no longer has column(s) gone on the source');
    await query(uris.target, 'ALTER TABLE items DROP COLUMN gone');

    const resumed = await startReplay('replay');
    await waitApplied(resumed);
    expect(await query(uris.target, 'SELECT id, v::text FROM items WHERE id IN (1, 2) ORDER BY id')).toEqual([
      { id: 1, v: '5000000000' },
      { id: 2, v: '7' },
    ]);
  });

  it('stops on a table and a partition created on the source, and resumes once they are on the target and published', async () => {
    await query(
      uris.source,
      `CREATE TABLE fresh (id int PRIMARY KEY);
       CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`,
    );
    const stopped = await expectStop(replay as CliProcess, 'REPLAY_NEW_TABLE');
    expect(stopped.stderr).toMatch(
      /Table\(s\) (public\.events_2025, public\.fresh|public\.fresh, public\.events_2025) were created/,
    );
    expect(stopped.stderr).toContain('ALTER PUBLICATION pg_live_migrate_default ADD TABLE');

    await query(
      uris.target,
      `CREATE TABLE fresh (id int PRIMARY KEY);
       CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`,
    );
    await query(uris.source, 'ALTER PUBLICATION pg_live_migrate_default ADD TABLE fresh, events_2025');
    const resumed = await startReplay('replay');
    await query(uris.source, `INSERT INTO fresh VALUES (1); INSERT INTO events VALUES (2, '2025-03-01')`);
    await waitApplied(resumed);
    expect(await query(uris.target, 'SELECT id FROM fresh')).toEqual([{ id: 1 }]);
    expect(await query(uris.target, 'SELECT id, at::text FROM events_2025')).toEqual([
      { id: 2, at: '2025-03-01' },
    ]);
  });

  it('stops on a row missing on the target without applying any of its transaction, and resumes once fixed', async () => {
    // The target diverged (someone deleted a row there); the next source transaction updates that row and
    // then inserts a run of rows sent by COPY, and a later one inserts more.
    await query(uris.target, 'DELETE FROM items WHERE id = 50');
    const before = await query<{ a: string }>(
      uris.target,
      `SELECT applied_lsn::text AS a FROM _pg_live_migrate.replay WHERE migration_id = 'default'`,
    );
    await query(
      uris.source,
      `BEGIN; UPDATE items SET v = -50 WHERE id = 50;
         INSERT INTO items (id, v) SELECT g, g FROM generate_series(201, 220) g; COMMIT;
       INSERT INTO items (id, v) VALUES (300, 300)`,
    );
    const stopped = await expectStop(replay as CliProcess, 'REPLAY_ROW_NOT_FOUND');
    expect(stopped.stderr).toContain('public.items (id=50)');
    // Nothing of that transaction or after it is on the target, and the position did not move past it.
    expect(await query(uris.target, 'SELECT count(*)::int AS n FROM items WHERE id > 200')).toEqual([
      { n: 0 },
    ]);
    expect(
      await query<{ a: string }>(
        uris.target,
        `SELECT applied_lsn::text AS a FROM _pg_live_migrate.replay WHERE migration_id = 'default'`,
      ),
    ).toEqual(before);

    await query(uris.target, 'INSERT INTO items (id, v) VALUES (50, 50)');
    const resumed = await startReplay('replay');
    await waitApplied(resumed);
    const rows = `SELECT id, v FROM items WHERE id = 50 OR id > 200 ORDER BY id`;
    expect(await query(uris.target, rows)).toEqual(await query(uris.source, rows));
    expect(await query(uris.target, 'SELECT count(*)::int AS n FROM items WHERE id > 200')).toEqual([
      { n: 21 },
    ]);
  });

  it('cuts over with matching checksums once the keyless table is made equal by a replayed TRUNCATE', async () => {
    expect(replay?.child.exitCode, 'the replay must still be running').toBeNull();
    await query(
      uris.source,
      `BEGIN; TRUNCATE keyless; INSERT INTO keyless SELECT g, 'again ' || g FROM generate_series(1, 5) g; COMMIT`,
    );
    const cutover = await runCli(['cutover', ...common, '--checksum', '--timeout', '60s']);
    expect(cutover.code, cutover.stderr).toBe(0);
    const done = await replay?.result;
    expect(done?.code, done?.stderr).toBe(0);
    expect(done?.stderr).toContain('Validation passed');
    expect(await query(uris.target, 'SELECT count(*)::int AS n FROM keyless')).toEqual([{ n: 5 }]);
  });
});
