import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkAndStop,
  freshDatabases,
  loadPagila,
  type Pair,
  query,
  runCli,
  startPair,
} from '../helpers/clusters';

describe('copy of the pagila database through the CLI', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'pagila');
    await loadPagila(pair.source, 'pagila');
    dir = `${pair.target.dataDir}-work`;
    const result = await runCli([
      'copy',
      '--source',
      uris.source,
      '--target',
      uris.target,
      '--dir',
      dir,
      '--table-jobs',
      '2',
      '--index-jobs',
      '2',
    ]);
    expect(result.stderr).toContain('copy done');
    expect(result.code).toBe(0);
  });

  afterAll(async () => {
    await runCli(['clean', '--source', uris.source, '--target', uris.target, '--dir', dir, '--prune']);
    await checkAndStop(pair);
  });

  it('copies every table with the same row count', async () => {
    const counts = async (uri: string) =>
      query<{ t: string; n: string }>(
        uri,
        `SELECT format('%I.%I', schemaname, relname) AS t,
                (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I', schemaname, relname), false, true, '')))[1]::text AS n
           FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY 1`,
      );
    const source = await counts(uris.source);
    expect(source.length).toBeGreaterThan(15);
    expect(await counts(uris.target)).toEqual(source);
  });

  it('recreates every object kind: partitions, matview data, domains, enums, views, functions, triggers', async () => {
    const kinds = `SELECT
        (SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'payment')::int AS payment_partitions,
        (SELECT relkind FROM pg_class WHERE relname = 'payment')::text AS payment_kind,
        (SELECT count(*) FROM public.rental_by_category)::int AS matview_rows,
        (SELECT count(*) FROM pg_type WHERE typtype = 'd' AND typnamespace = 'public'::regnamespace)::int AS domains,
        (SELECT count(*) FROM pg_type WHERE typtype = 'e' AND typnamespace = 'public'::regnamespace)::int AS enums,
        (SELECT count(*) FROM pg_views WHERE schemaname = 'public')::int AS views,
        (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)::int AS functions,
        (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal)::int AS triggers,
        (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')::int AS indexes,
        (SELECT count(*) FROM pg_constraint WHERE contype = 'f')::int AS foreign_keys`;
    const [source] = await query(uris.source, kinds);
    const [target] = await query(uris.target, kinds);
    expect(source?.payment_kind).toBe('p');
    expect(source?.matview_rows).toBeGreaterThan(0);
    expect(source?.triggers).toBeGreaterThan(0);
    expect(target).toEqual(source);
  });

  it('sets every sequence to its value at the snapshot', async () => {
    const seqs = `SELECT schemaname, sequencename, last_value::text FROM pg_sequences WHERE schemaname <> '_pg_live_migrate' ORDER BY 1, 2`;
    const source = await query(uris.source, seqs);
    expect(source.length).toBeGreaterThan(5);
    expect(await query(uris.target, seqs)).toEqual(source);
  });

  it('keeps arrays, bytea and full-text columns byte for byte', async () => {
    const sample = `SELECT md5(string_agg(f::text, '|' ORDER BY film_id)) AS h FROM public.film f`;
    expect(await query(uris.target, sample)).toEqual(await query(uris.source, sample));
    const pictures = `SELECT md5(string_agg(coalesce(encode(picture, 'hex'), '-'), '|' ORDER BY staff_id)) AS h FROM public.staff`;
    expect(await query(uris.target, pictures)).toEqual(await query(uris.source, pictures));
  });

  it('records the plan, the consistent point and the snapshot on the target', async () => {
    const result = await runCli(['status', '--json', '--source', uris.source, '--target', uris.target]);
    expect(result.code).toBe(0);
    const status = JSON.parse(result.stdout);
    expect(status).toMatchObject({
      migrationId: 'default',
      phase: 'copy',
      copyFinished: true,
      slot: { exists: true },
    });
    expect(status.tables.done).toBe(status.tables.total);
    expect(status.rowsCopied).toBeGreaterThan(40_000);
    expect(status.bytesCopied).toBeGreaterThan(1_000_000);
  });

  it('says the lag is not measured yet (not "0 B, caught up") while a replay has not reported one', async () => {
    // The row a replay writes when it starts, before its first lag report.
    await query(
      uris.target,
      `INSERT INTO _pg_live_migrate.replay (migration_id, applied_lsn) VALUES ('default', '0/0')`,
    );
    try {
      const args = ['--source', uris.source, '--target', uris.target];
      const status = JSON.parse((await runCli(['status', '--json', ...args])).stdout);
      expect(status).toMatchObject({ lagBytes: null, lagSeconds: null, replay: { etaSeconds: null } });
      const text = await runCli(['status', ...args]);
      expect(text.stdout + text.stderr).toContain('lag not measured yet');
    } finally {
      await query(uris.target, `DELETE FROM _pg_live_migrate.replay WHERE migration_id = 'default'`);
    }
  });
});
