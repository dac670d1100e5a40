import pg from 'pg';
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

const TABLES = [
  ['pgbench_accounts', 'aid'],
  ['pgbench_branches', 'bid'],
  ['pgbench_tellers', 'tid'],
  ['pgbench_history', 'mtime, aid, tid, delta'],
  ['keyless', 'id, note'],
] as const;

describe('a copy while pgbench writes to the source', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'live');
    await pgbenchInit(pair.source, 'live', 3);
    await query(
      uris.source,
      `CREATE TABLE keyless (id int, note text); INSERT INTO keyless SELECT g, 'n' || g FROM generate_series(1, 1000) g`,
    );
    dir = `${pair.target.dataDir}-work`;
  });

  afterAll(async () => {
    await runCli(['clean', '--source', uris.source, '--target', uris.target, '--dir', dir, '--prune']);
    await checkAndStop(pair);
  });

  it('makes the target equal to the source as of the snapshot, and the source keeps accepting every write', async () => {
    const common = ['--source', uris.source, '--target', uris.target, '--dir', dir];
    const holder = spawnCli(['snapshot', '--hold', ...common]);
    const snapshotName = await waitFor(() => /^\S+-\S+-\S+$/m.exec(holder.output().stdout)?.[0], {
      timeoutMs: 20_000,
      what: 'the snapshot name',
    });

    // The keyless table is published for INSERT and TRUNCATE only, so UPDATE and DELETE still work on the source.
    const pubs = await query<{ pubname: string; tablename: string; pubupdate: boolean }>(
      uris.source,
      `SELECT p.pubname, t.tablename, p.pubupdate FROM pg_publication p JOIN pg_publication_tables t USING (pubname) WHERE t.tablename = 'keyless'`,
    );
    expect(pubs).toEqual([
      { pubname: 'pg_live_migrate_default_insert_only', tablename: 'keyless', pubupdate: false },
    ]);
    await query(
      uris.source,
      `UPDATE keyless SET note = 'changed' WHERE id <= 10; DELETE FROM keyless WHERE id > 990`,
    );

    const load = pair.source.run('pgbench', [
      '-n',
      '-c',
      '2',
      '-j',
      '1',
      '-T',
      '8',
      '-h',
      '127.0.0.1',
      '-p',
      String(pair.source.port),
      '-U',
      'postgres',
      'live',
    ]);
    await new Promise((r) => setTimeout(r, 500));
    // The snapshot is named explicitly here (the resume test finds it on the target instead).
    const copy = await runCli([
      'copy',
      ...common,
      '--snapshot',
      snapshotName,
      '--table-jobs',
      '2',
      '--index-jobs',
      '2',
      '--split-tables-larger-than',
      '4MB',
    ]);
    expect(copy.code).toBe(0);
    await load;

    // Read the source inside the same snapshot the copy used, then compare.
    const client = new pg.Client({ connectionString: uris.source });
    await client.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await client.query(`SET TRANSACTION SNAPSHOT '${snapshotName}'`);
      for (const [table, order] of TABLES) {
        const {
          rows: [atSnapshot],
        } = await client.query(tableDigestSql(table, order));
        const [target] = await query(uris.target, tableDigestSql(table, order));
        expect({ table, ...target }).toEqual({ table, ...atSnapshot });
      }
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
    // And the source has moved on since: pgbench really wrote during the copy.
    const [live] = await query<{ n: number }>(uris.source, 'SELECT count(*)::int AS n FROM pgbench_history');
    const [copied] = await query<{ n: number }>(
      uris.target,
      'SELECT count(*)::int AS n FROM pgbench_history',
    );
    expect(live?.n ?? 0).toBeGreaterThan(copied?.n ?? 0);

    holder.child.kill('SIGTERM');
    const held = await holder.result;
    expect(held.code).toBe(0);
  });
});
