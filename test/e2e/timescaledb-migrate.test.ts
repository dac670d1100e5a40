// TimescaleDB to TimescaleDB through the built CLI, against real clusters with the extension preloaded:
// a hypertable with daily chunks (some compressed) and a continuous aggregate, a keyless hypertable with a
// retention policy, a paused user job. While `migrate` replays, the source gets new chunks, updates and
// deletes in old chunks, DML on compressed chunks (one delete of whole compressed batches, which logical
// decoding does not carry), a compression run and a retention run. After the cutover every chunk's checksum
// matches, and the hypertables, compression, aggregate and jobs are on the target as on the source.
// Skips (saying why) where TimescaleDB is not installed.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ValidationReport } from '../../src/core/validation';
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
import { TIMESCALE_SETTINGS, timescaleForTests } from '../helpers/timescale';

const installed = await timescaleForTests('the TimescaleDB migration tests');

/** Days before today (UTC midnight): chunk boundaries of the daily chunks. */
const day = (n: number) => `(date_trunc('day', now(), 'UTC') - INTERVAL '${n} days')`;

const SOURCE_SQL = `
  CREATE EXTENSION timescaledb;
  CREATE TABLE metrics (time timestamptz NOT NULL, device int NOT NULL, value double precision, note text,
                        PRIMARY KEY (device, time));
  SELECT create_hypertable('metrics', by_range('time', INTERVAL '1 day'));
  INSERT INTO metrics SELECT t, d, d * 0.5 + extract(hour FROM t), 'v'
    FROM generate_series(${day(12)}, ${day(0)} - INTERVAL '30 minutes', INTERVAL '30 minutes') t, generate_series(1, 4) d;
  ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device',
                           timescaledb.compress_orderby = 'time DESC');
  SELECT compress_chunk(c) FROM show_chunks('metrics', older_than => ${day(9)}) c;
  -- Scheduled, but far from its next run: the test runs it by hand during the migration.
  SELECT add_compression_policy('metrics', INTERVAL '6 days', initial_start => now() + INTERVAL '1 day');
  CREATE MATERIALIZED VIEW metrics_daily WITH (timescaledb.continuous) AS
    SELECT time_bucket('1 day', time) AS day, device, avg(value) AS value, count(*) AS n
      FROM metrics GROUP BY 1, 2 WITH NO DATA;
  SELECT add_continuous_aggregate_policy('metrics_daily', start_offset => NULL, end_offset => INTERVAL '1 hour',
                                         schedule_interval => INTERVAL '1 hour', initial_start => now() + INTERVAL '1 day');
  CREATE TABLE events (time timestamptz NOT NULL, note text);
  SELECT create_hypertable('events', by_range('time', INTERVAL '1 day'));
  INSERT INTO events SELECT t, 'e' FROM generate_series(${day(14)}, ${day(0)}, INTERVAL '2 hours') t;
  SELECT add_retention_policy('events', INTERVAL '10 days', initial_start => now() + INTERVAL '1 day');
  -- Space partitioning: chunks are a time range and a hash range (several per day).
  CREATE TABLE spaced (time timestamptz NOT NULL, device int NOT NULL, v float8, PRIMARY KEY (device, time));
  SELECT create_hypertable('spaced', by_range('time', INTERVAL '1 day'));
  SELECT add_dimension('spaced', by_hash('device', 3));
  INSERT INTO spaced SELECT t, d, d FROM generate_series(${day(5)}, ${day(0)}, INTERVAL '1 hour') t, generate_series(1, 12) d;
  -- Keyless with REPLICA IDENTITY FULL (preflight's advice for keyless hypertables), compressed, with a
  -- duplicate row: its updates and deletes are decoded and must find one of identical rows without a ctid.
  CREATE TABLE logs (time timestamptz NOT NULL, line text);
  SELECT create_hypertable('logs', by_range('time', INTERVAL '1 day'));
  ALTER TABLE logs REPLICA IDENTITY FULL;
  INSERT INTO logs SELECT t, 'l' FROM generate_series(${day(4)}, ${day(0)}, INTERVAL '2 hours') t;
  INSERT INTO logs VALUES (${day(3)} + INTERVAL '2 hours', 'l');
  ALTER TABLE logs SET (timescaledb.compress);
  SELECT compress_chunk(c) FROM show_chunks('logs', older_than => ${day(2)}) c;
  CREATE PROCEDURE noop_job(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
  SELECT add_job('noop_job', INTERVAL '6 hours', config => '{"k": 1}', scheduled => false);
`;

/** Everything the source does while the replay runs. */
const WRITES_SQL = `
  -- New chunks (today, tomorrow), and a row updated in one of them after its first rows.
  INSERT INTO metrics SELECT t, d, 1, 'new' FROM generate_series(${day(0)}, ${day(-2)}, INTERVAL '1 hour') t, generate_series(1, 4) d;
  UPDATE metrics SET note = 'updated in a new chunk' WHERE time = ${day(-1)} + INTERVAL '3 hours' AND device = 2;
  -- An uncompressed old chunk: update and delete.
  UPDATE metrics SET value = -1, note = 'updated' WHERE time = ${day(3)} + INTERVAL '10 hours';
  DELETE FROM metrics WHERE time = ${day(3)} + INTERVAL '11 hours' AND device = 2;
  -- A compressed chunk: update (TimescaleDB decompresses the batch between its markers), insert, row delete.
  UPDATE metrics SET note = 'updated while compressed' WHERE time = ${day(11)} + INTERVAL '5 hours' AND device = 1;
  INSERT INTO metrics VALUES (${day(11)} + INTERVAL '5 minutes', 9, 9, 'inserted into a compressed chunk');
  DELETE FROM metrics WHERE time = ${day(11)} + INTERVAL '6 hours' AND device = 4;
  -- Whole compressed batches deleted without decompression: not decoded, settled at cutover.
  DELETE FROM metrics WHERE device = 3 AND time >= ${day(10)} AND time < ${day(9)};
  -- The space-partitioned hypertable: a new day's chunks and an update across partitions.
  INSERT INTO spaced SELECT t, d, 0 FROM generate_series(${day(0)} + INTERVAL '30 minutes', ${day(-1)}, INTERVAL '1 hour') t, generate_series(1, 12) d;
  UPDATE spaced SET v = -1 WHERE time = ${day(2)};
  -- The REPLICA IDENTITY FULL hypertable: one of two identical rows updated, one deleted, in compressed chunks.
  UPDATE logs SET line = 'both of two' WHERE time = ${day(3)} + INTERVAL '2 hours';
  DELETE FROM logs WHERE time = ${day(4)} + INTERVAL '4 hours';
  UPDATE logs SET line = 'uncompressed' WHERE time = ${day(1)} + INTERVAL '2 hours';
  -- The keyless hypertable: an insert (replicated) and an update (not decodable, settled at cutover).
  INSERT INTO events VALUES (${day(0)} + INTERVAL '1 minute', 'new');
  UPDATE events SET note = 'updated' WHERE time = ${day(2)};
`;

/** The policies that run during the migration: chunks compressed (between markers), chunks dropped. */
const POLICY_RUNS = ['policy_compression', 'policy_retention'];

/** Waits until `cli` (a migrate) reports the target caught up; an error line fails at once, with its log. */
async function caughtUp(cli: CliProcess, what: string, timeoutMs = 60_000): Promise<void> {
  const seen = await waitFor(
    () => {
      const log = cli.output().stderr;
      if (log.includes('Target has caught up')) return 'caught up';
      return /^error /m.test(log) ? 'failed' : undefined;
    },
    { timeoutMs, what: `${what} to catch up` },
  );
  expect(seen, cli.output().stderr).toBe('caught up');
}

interface JobRow {
  proc_name: string;
  hypertable_name: string | null;
  scheduled: boolean;
  schedule_interval: string;
  config: Record<string, unknown> | null;
}

describe.skipIf(!installed)('TimescaleDB to TimescaleDB', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let dir: string;
  let args: string[] = [];
  let migrate: CliProcess | undefined;

  beforeAll(async () => {
    pair = await startPair({ source: TIMESCALE_SETTINGS, target: TIMESCALE_SETTINGS });
    uris = await freshDatabases(pair, 'tsmig');
    await query(uris.source, SOURCE_SQL);
    await query(uris.source, `CALL refresh_continuous_aggregate('metrics_daily', NULL, NULL)`);
    // Retention ran before the migration: the oldest day's raw rows are gone, its aggregate rows are not.
    await query(uris.source, `SELECT drop_chunks('metrics', older_than => ${day(11)})`);
    dir = `${pair.target.dataDir}-tsmig`;
    args = ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', 'tsmig'];
  });

  afterAll(async () => {
    try {
      migrate?.child.kill('SIGKILL');
      await migrate?.result;
      await runCli(['clean', ...args, '--prune']);
      await rm(dir, { recursive: true, force: true });
      await assertNoLeaks(pair);
    } finally {
      await pair.stop();
    }
  });

  it('migrates hypertables, compressed chunks, a continuous aggregate and jobs while the source writes', async () => {
    const compressedAtStart = await query<{ range_start: string }>(
      uris.source,
      `SELECT range_start::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed ORDER BY 1`,
    );
    expect(compressedAtStart.length).toBeGreaterThanOrEqual(2);

    migrate = spawnCli(['migrate', ...args, '--lag-interval', '1s']);
    const cli = migrate;
    await caughtUp(cli, 'migrate', 90_000);

    // After the copy: the chunks compressed on the source are compressed on the target too, the jobs are
    // there but paused, and the continuous aggregate exists (empty until the cutover refreshes it).
    const compressedOnTarget = await query<{ range_start: string }>(
      uris.target,
      `SELECT range_start::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed ORDER BY 1`,
    );
    expect(compressedOnTarget).toEqual(compressedAtStart);
    const pausedJobs = await query<{ scheduled: boolean }>(
      uris.target,
      'SELECT scheduled FROM timescaledb_information.jobs WHERE job_id >= 1000',
    );
    expect(pausedJobs).toHaveLength(4);
    expect(pausedJobs.every((j) => !j.scheduled)).toBe(true);

    await query(uris.source, WRITES_SQL);
    for (const proc of POLICY_RUNS) {
      const [job] = await query<{ id: number }>(
        uris.source,
        'SELECT job_id AS id FROM timescaledb_information.jobs WHERE proc_name = $1',
        [proc],
      );
      await query(uris.source, `CALL run_job(${Number(job?.id)})`);
    }
    // Without --checksum: what only contents show (keyless updates, late chunks' early updates) is still found.
    const cutover = await runCli(['cutover', ...args, '--timeout', '90s']);
    expect(cutover.code, `${cutover.stderr}\n--- migrate:\n${cli.output().stderr}`).toBe(0);
    const done = await cli.result;
    expect(done.code, done.stderr).toBe(0);
    const log = done.stderr;
    expect(log).toContain('Migration successfully completed');
    // The chunks that logical decoding could not carry were found and copied again under the cutover, and
    // only those: the compressed chunk that lost whole batches and the keyless chunk with an update.
    const undecodable = await query<{ name: string }>(
      uris.source,
      `SELECT chunk_schema || '.' || chunk_name AS name FROM timescaledb_information.chunks
        WHERE (hypertable_name = 'metrics' AND range_start = ${day(10)}) OR (hypertable_name = 'events' AND range_start = ${day(2)})
        ORDER BY 1`,
    );
    const recopied = /cutover: chunks re-copied \(([^)]*)\)/.exec(log)?.[1]?.split(', ').sort();
    expect(recopied).toEqual(undecodable.map((c) => c.name));
    expect(log).toMatch(/cutover: dropped chunks \(\d+ chunks dropped on the source/);
    expect(log).toMatch(
      /TimescaleDB created chunk _timescaledb_internal\._hyper_1_\d+_chunk of public\.metrics/,
    );

    // Every chunk compared on its own, contents included.
    const validate = await runCli(['validate', ...args, '--checksum', '--json']);
    expect(validate.code, validate.stderr).toBe(0);
    const report = JSON.parse(validate.stdout) as ValidationReport;
    const chunks = report.tables.filter((t) => t.table.includes(' chunk _hyper_'));
    const sourceChunks = await query<{ n: number }>(
      uris.source,
      `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name IN ('metrics', 'events', 'spaced', 'logs')`,
    );
    expect(chunks).toHaveLength(sourceChunks[0]?.n ?? -1);
    expect(chunks.every((t) => t.ok)).toBe(true);

    // The rows themselves, including what only the cutover's re-copy could bring over.
    const facts = `SELECT (SELECT count(*) FROM metrics)::int AS metrics, (SELECT sum(value) FROM metrics)::text AS total,
                          (SELECT string_agg(note, ',' ORDER BY note) FROM metrics WHERE note LIKE '%updated%' OR note LIKE 'inserted%') AS notes,
                          (SELECT count(*) FROM metrics WHERE device = 3 AND time >= ${day(10)} AND time < ${day(9)})::int AS deleted_batch,
                          (SELECT count(*) FROM events)::int AS events, (SELECT min(time) FROM events)::text AS oldest_event,
                          (SELECT count(*) FROM events WHERE note = 'updated')::int AS updated_events,
                          (SELECT count(*) FROM spaced)::int AS spaced, (SELECT sum(v) FROM spaced)::text AS spaced_total,
                          (SELECT string_agg(time::text || line, ',' ORDER BY time, line) FROM logs) AS logs`;
    const [onSource] = await query(uris.source, facts);
    const [onTarget] = await query(uris.target, facts);
    expect(onTarget).toEqual(onSource);
    expect(onSource).toMatchObject({ deleted_batch: 0, updated_events: 1 });

    // Same hypertables: dimensions, chunk intervals and compression settings.
    const layout = `SELECT d.hypertable_name, d.column_name, d.time_interval::text, s.segmentby, s.orderby
                      FROM timescaledb_information.dimensions d
                      LEFT JOIN timescaledb_information.hypertable_compression_settings s ON s.hypertable::text = d.hypertable_name
                     WHERE d.hypertable_schema = 'public' ORDER BY 1, 2`;
    expect(await query(uris.target, layout)).toEqual(await query(uris.source, layout));

    // The continuous aggregate: the buckets whose raw rows retention dropped before the migration are the
    // source's materialized rows; the others are refreshed at cutover from the target's raw data.
    type Bucket = { day: Date; device: number; value: number; n: string };
    const cagg = await query<Bucket>(
      uris.target,
      'SELECT day, device, value, n FROM metrics_daily ORDER BY 1, 2',
    );
    const [rawStart] = await query<{ start: Date }>(uris.target, 'SELECT min(time) AS start FROM metrics');
    const cut = rawStart?.start.getTime() ?? 0;
    const kept = await query<Bucket>(
      uris.source,
      'SELECT day, device, value, n FROM metrics_daily WHERE day < $1 ORDER BY 1, 2',
      [rawStart?.start],
    );
    expect(kept).toHaveLength(4);
    const fresh = await query<Bucket>(
      uris.target,
      `SELECT time_bucket('1 day', time) AS day, device, avg(value) AS value, count(*) AS n FROM metrics GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    expect(cagg.length).toBeGreaterThan(40);
    expect(cagg).toEqual([...kept, ...fresh.filter((b) => b.day.getTime() >= cut)]);

    // The jobs, in the state they have on the source (the user job paused), with the same config.
    // Next run included: a policy due tomorrow on the source must not run on the target right after the cutover.
    const jobs = `SELECT proc_name, hypertable_name, scheduled, schedule_interval::text, config - 'hypertable_id' - 'mat_hypertable_id' AS config,
                         date_trunc('second', coalesce(next_start, initial_start))::text AS next_run
                    FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY proc_name`;
    const targetJobs = await query<JobRow>(uris.target, jobs);
    expect(targetJobs).toEqual(await query<JobRow>(uris.source, jobs));
    expect(targetJobs.map((j) => [j.proc_name, j.scheduled])).toEqual([
      ['noop_job', false],
      ['policy_compression', true],
      ['policy_refresh_continuous_aggregate', true],
      ['policy_retention', true],
    ]);

    // validate --repair: a damaged range on the target is found per chunk and copied again.
    await query(
      uris.target,
      `DELETE FROM metrics WHERE time >= ${day(5)} AND time < ${day(4)} AND device <> 1`,
    );
    const damaged = await runCli(['validate', ...args]);
    expect(damaged.code, damaged.stderr).toBe(5);
    const repaired = await runCli(['validate', ...args, '--checksum', '--repair']);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.stderr).toMatch(
      /Copied 1 chunks again \(\d+ rows\): _timescaledb_internal\._hyper_1_\d+_chunk/,
    );
    const [repairedFacts] = await query(uris.target, facts);
    expect(repairedFacts).toEqual(onSource);
  });

  it('turns plain tables into hypertables on the way (PostgreSQL to TimescaleDB), refusing one that cannot be', async () => {
    const pg = await freshDatabases(pair, 'pgts');
    await query(
      pg.source,
      `CREATE TABLE readings (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, sensor int, v float8,
                              PRIMARY KEY (id, at));
       INSERT INTO readings (at, sensor, v) SELECT t, 1, extract(minute FROM t) FROM generate_series(${day(10)}, ${day(0)}, INTERVAL '10 minutes') t;
       CREATE TABLE keyed_by_id (id int PRIMARY KEY, at timestamptz NOT NULL);`,
    );
    const pgDir = `${pair.target.dataDir}-pgts`;
    const pgArgs = ['--source', pg.source, '--target', pg.target, '--dir', pgDir, '--migration-id', 'pgts'];
    try {
      // A primary key without the time column cannot exist on a hypertable: refused before any row is copied.
      const refused = await runCli([
        'copy',
        ...pgArgs,
        '--hypertable',
        'readings:at',
        '--hypertable',
        'keyed_by_id:at',
      ]);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain('error HYPERTABLE_NOT_POSSIBLE');
      expect(refused.stderr).toContain(
        '"public"."keyed_by_id" has a primary key or unique index without "at"',
      );
      await runCli(['clean', ...pgArgs]);

      const run = spawnCli([
        'migrate',
        ...pgArgs,
        '--hypertable',
        'public.readings:at:1 day',
        '--lag-interval',
        '1s',
      ]);
      await caughtUp(run, 'migrate');
      await query(
        pg.source,
        `INSERT INTO readings (at, sensor, v) SELECT t, 2, 1 FROM generate_series(${day(0)}, ${day(-3)}, INTERVAL '1 hour') t;
         UPDATE readings SET v = -1 WHERE at < ${day(9)};
         DELETE FROM readings WHERE at < ${day(9)} + INTERVAL '12 hours' AND sensor = 1;`,
      );
      const cutover = await runCli(['cutover', ...pgArgs, '--checksum']);
      expect(cutover.code, `${cutover.stderr}\n${run.output().stderr}`).toBe(0);
      expect((await run.result).code).toBe(0);

      const shape = await query<{ interval: string; chunks: number; pk: string }>(
        pg.target,
        `SELECT d.time_interval::text AS interval,
                (SELECT count(*)::int FROM timescaledb_information.chunks WHERE hypertable_name = 'readings') AS chunks,
                (SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'readings'::regclass AND contype = 'p') AS pk
           FROM timescaledb_information.dimensions d WHERE d.hypertable_name = 'readings'`,
      );
      expect(shape).toEqual([{ interval: '1 day', chunks: 14, pk: 'PRIMARY KEY (id, at)' }]);
      const facts = `SELECT count(*)::int AS n, sum(v)::text AS total, count(*) FILTER (WHERE v = -1)::int AS updated FROM readings`;
      const [onSource] = await query(pg.source, facts);
      expect(await query(pg.target, facts)).toEqual([onSource]);
      expect(onSource).toMatchObject({ updated: expect.any(Number) });
      const validate = await runCli(['validate', ...pgArgs, '--checksum']);
      expect(validate.code, validate.stderr).toBe(0);
    } finally {
      await runCli(['clean', ...pgArgs, '--prune']);
      await rm(pgDir, { recursive: true, force: true });
    }
  });

  it('migrates hypertables for a source user that is not superuser: new chunks are published late and copied again at cutover, across a kill -9', async () => {
    const db = await freshDatabases(pair, 'tsowner');
    await query(
      pair.source.uri(),
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ts_app') THEN CREATE ROLE ts_app LOGIN REPLICATION; END IF;
       END $$`,
    );
    await query(
      db.source,
      'CREATE EXTENSION timescaledb; GRANT CREATE ON DATABASE tsowner TO ts_app; GRANT ALL ON SCHEMA public TO ts_app',
    );
    const owner = pair.source.uri('tsowner', 'ts_app');
    await query(
      owner,
      `CREATE TABLE sensor (time timestamptz NOT NULL, id int NOT NULL, v float8, PRIMARY KEY (id, time));
       SELECT create_hypertable('sensor', by_range('time', INTERVAL '1 day'));
       INSERT INTO sensor SELECT t, i, i FROM generate_series(${day(4)}, ${day(1)}, INTERVAL '1 hour') t, generate_series(1, 3) i;
       CREATE TABLE log (time timestamptz NOT NULL, line text);
       SELECT create_hypertable('log', by_range('time', INTERVAL '1 day'));
       INSERT INTO log SELECT t, 'l' FROM generate_series(${day(4)}, ${day(1)}, INTERVAL '3 hours') t;`,
    );
    const ownerDir = `${pair.target.dataDir}-tsowner`;
    const ownerArgs = [
      '--source',
      owner,
      '--target',
      db.target,
      '--dir',
      ownerDir,
      '--migration-id',
      'tsowner',
    ];
    try {
      const run = spawnCli(['migrate', ...ownerArgs, '--lag-interval', '1s']);
      await caughtUp(run, 'migrate');
      // New chunks (keyed and keyless) with rows written before the replay can publish them, then updates.
      await query(
        owner,
        `INSERT INTO sensor SELECT t, i, 0 FROM generate_series(${day(0)}, ${day(-2)}, INTERVAL '1 hour') t, generate_series(1, 3) i;
         INSERT INTO log SELECT t, 'new' FROM generate_series(${day(0)}, ${day(-2)}, INTERVAL '3 hours') t;`,
      );
      await waitFor(() => /published from now on/.test(run.output().stderr) || undefined, {
        timeoutMs: 30_000,
        what: 'the new chunks to be published',
      });
      // Killed and resumed: what the replay knows about the late chunks is on the target, not in the process.
      run.child.kill('SIGKILL');
      await run.result;
      const resumed = spawnCli(['migrate', ...ownerArgs, '--resume', '--lag-interval', '1s']);
      await caughtUp(resumed, 'migrate --resume');
      await query(
        owner,
        `UPDATE sensor SET v = 42 WHERE time = ${day(-1)} AND id = 2;
         DELETE FROM sensor WHERE time = ${day(0)} AND id = 3;
         INSERT INTO sensor VALUES (${day(-1)} + INTERVAL '30 minutes', 1, 7);
         UPDATE log SET line = 'changed in an old chunk' WHERE time = ${day(3)};`,
      );
      // Without --checksum: the keyless hypertable's update (not decoded, same row count) is still found.
      const cutover = await runCli(['cutover', ...ownerArgs]);
      expect(cutover.code, `${cutover.stderr}\n${resumed.output().stderr}`).toBe(0);
      const log = (await resumed.result).stderr;
      expect(log).toMatch(/cutover: late chunks \(\d+ chunks created during the migration/);
      const publications = await query<{ pubname: string }>(
        db.source,
        'SELECT pubname FROM pg_publication ORDER BY 1',
      );
      expect(publications.map((p) => p.pubname)).toEqual([
        'pg_live_migrate_tsowner',
        'pg_live_migrate_tsowner_insert_only',
      ]);
      const facts = `SELECT (SELECT count(*) FROM sensor)::int AS sensor, (SELECT sum(v) FROM sensor)::text AS total,
                            (SELECT count(*) FROM log)::int AS log,
                            (SELECT string_agg(line, ',' ORDER BY time) FROM log WHERE line <> 'l') AS lines`;
      const [onSource] = await query(db.source, facts);
      expect(await query(db.target, facts)).toEqual([onSource]);
      const validate = await runCli(['validate', ...ownerArgs, '--checksum']);
      expect(validate.code, validate.stderr).toBe(0);
    } finally {
      await runCli(['clean', ...ownerArgs, '--prune']);
      await rm(ownerDir, { recursive: true, force: true });
    }
  });

  it('resumes a copy killed between chunks from a fresh snapshot, and converges with writes in between', async () => {
    const db = await freshDatabases(pair, 'tsresume');
    await query(
      db.source,
      `CREATE EXTENSION timescaledb;
       CREATE TABLE readings (time timestamptz NOT NULL, id int NOT NULL, v float8, PRIMARY KEY (id, time));
       SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'));
       INSERT INTO readings SELECT t, i, i FROM generate_series(${day(30)}, ${day(0)}, INTERVAL '5 minutes') t, generate_series(1, 20) i;
       ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'id');`,
    );
    await query(
      db.source,
      `SELECT compress_chunk(c) FROM show_chunks('readings', older_than => ${day(15)}) c`,
    );
    const dir2 = `${pair.target.dataDir}-tsresume`;
    const args2 = ['--source', db.source, '--target', db.target, '--dir', dir2, '--migration-id', 'tsresume'];
    try {
      const first = spawnCli(['migrate', ...args2, '--table-jobs', '1', '--lag-interval', '1s']);
      await waitFor(
        async () => {
          const [row] = await query<{ n: number }>(
            db.target,
            `SELECT count(*)::int AS n FROM _pg_live_migrate.copy_part WHERE done_at IS NOT NULL`,
          ).catch(() => [{ n: 0 }]);
          return (row?.n ?? 0) >= 3 || undefined;
        },
        { timeoutMs: 60_000, intervalMs: 20, what: 'three chunks copied' },
      );
      first.child.kill('SIGKILL');
      await first.result;
      // Writes while nothing runs: into copied chunks, chunks not copied yet, a compressed chunk, a new chunk.
      await query(
        db.source,
        `UPDATE readings SET v = -1 WHERE time = ${day(29)} AND id = 1;
         UPDATE readings SET v = -2 WHERE time = ${day(2)} AND id = 2;
         UPDATE readings SET v = -3 WHERE time = ${day(20)} AND id = 3;
         DELETE FROM readings WHERE time = ${day(1)} AND id = 4;
         INSERT INTO readings SELECT t, 99, 0 FROM generate_series(${day(0)}, ${day(-1)}, INTERVAL '1 hour') t;`,
      );
      const resumed = spawnCli(['migrate', ...args2, '--resume', '--lag-interval', '1s']);
      await caughtUp(resumed, 'migrate --resume', 90_000);
      expect(resumed.output().stderr).toContain('continuing from a fresh snapshot');
      const cutover = await runCli(['cutover', ...args2, '--checksum']);
      expect(cutover.code, `${cutover.stderr}\n${resumed.output().stderr}`).toBe(0);
      const done = await resumed.result;
      expect(done.code).toBe(0);
      // Converged by the replay itself (each chunk's earlier changes skipped or applied as its copy needs),
      // not by the cutover copying chunks again.
      expect(done.stderr).not.toContain('chunks re-copied');
      const facts = `SELECT count(*)::int AS n, sum(v)::text AS total, count(*) FILTER (WHERE v < 0)::int AS changed FROM readings`;
      const [onSource] = await query(db.source, facts);
      expect(await query(db.target, facts)).toEqual([onSource]);
      expect(onSource).toMatchObject({ changed: 3 });
    } finally {
      await runCli(['clean', ...args2, '--prune']);
      await rm(dir2, { recursive: true, force: true });
    }
  });
});
