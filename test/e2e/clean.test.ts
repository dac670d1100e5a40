import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkAndStop,
  freshDatabases,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  waitFor,
} from '../helpers/clusters';

describe('clean', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'shop');
    await query(
      uris.source,
      `CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g;
                              CREATE TABLE audit (at timestamptz, what text); INSERT INTO audit VALUES (now(), 'x')`,
    );
    dir = `${pair.target.dataDir}-work`;
  });

  afterAll(async () => {
    await checkAndStop(pair);
  });

  it('ends the process holding the slot, drops slot, publications and state, keeps logs, and is idempotent', async () => {
    const common = ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', 'm1'];
    const holder = spawnCli(['snapshot', '--hold', ...common]);
    await waitFor(() => /^\S+-\S+-\S+$/m.exec(holder.output().stdout)?.[0], {
      timeoutMs: 20_000,
      what: 'the snapshot',
    });
    expect((await runCli(['copy', ...common, '--table-jobs', '2'])).code).toBe(0);
    await mkdir(join(dir, 'reports'), { recursive: true });
    await writeFile(join(dir, 'reports', 'r.md'), 'x');

    const first = await runCli(['clean', '--prune', '--json', ...common]);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({
      slotDropped: true,
      publicationsDropped: ['pg_live_migrate_m1', 'pg_live_migrate_m1_insert_only'],
      targetSchemaDropped: true,
    });
    expect(first.stderr).toContain('Dropped replication slot pg_live_migrate_m1');
    // The snapshot holder's walsender was ended, so the holder process notices and exits.
    const held = await holder.result;
    expect(held.code).not.toBeNull();
    expect(await query(uris.source, `SELECT slot_name FROM pg_replication_slots`)).toEqual([]);
    expect(await query(uris.source, `SELECT pubname FROM pg_publication`)).toEqual([]);
    expect(
      await query(uris.target, `SELECT nspname FROM pg_namespace WHERE nspname = '_pg_live_migrate'`),
    ).toEqual([]);
    // User data is untouched, the work folder is pruned but logs/ stays.
    expect(await query(uris.target, 'SELECT count(*)::int AS n FROM orders')).toEqual([{ n: 100 }]);
    expect(existsSync(join(dir, 'reports'))).toBe(false);
    expect(existsSync(join(dir, 'm1'))).toBe(false);
    expect(existsSync(join(dir, 'logs', 'copy.log'))).toBe(true);

    const again = await runCli(['clean', '--prune', '--json', ...common]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      slotDropped: false,
      publicationsDropped: [],
      targetRowsDeleted: 0,
    });
    expect(again.stderr).toContain('No replication slot pg_live_migrate_m1 on the source');
  });

  it('leaves other migrations on the same target alone', async () => {
    const a = ['--source', uris.source, '--target', uris.target, '--dir', dir];
    const db2 = await freshDatabases(pair, 'shop2');
    await query(db2.source, 'CREATE TABLE t (id int PRIMARY KEY)');
    await query(uris.target, 'CREATE TABLE t (id int PRIMARY KEY)');
    const other = [
      '--source',
      db2.source,
      '--target',
      uris.target,
      '--dir',
      `${dir}-b`,
      '--migration-id',
      'other',
      '--skip-schema',
    ];
    // 'other' copies one empty table into the existing schema of the shared target.
    expect((await runCli(['copy', ...other])).code).toBe(0);
    expect((await runCli(['clean', ...a, '--migration-id', 'gone'])).code).toBe(0);
    const rows = await query(uris.target, `SELECT migration_id FROM _pg_live_migrate.migration`);
    expect(rows).toEqual([{ migration_id: 'other' }]);
    expect((await runCli(['clean', ...other])).code).toBe(0);
  });
});
