// Preflight against real clusters with TimescaleDB: a hypertable with chunks and compression, a keyless
// hypertable, a continuous aggregate, a retention policy and a user job. Skips (saying why) where the
// TimescaleDB extension is not installed for the PostgreSQL the harness uses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConnInfo } from '../../src/adapters/postgres/connection';
import {
  findPgBinDir,
  type LocalCluster,
  startLocalCluster,
} from '../../src/adapters/postgres/local-cluster';
import type { Finding, FindingCode, PreflightReport } from '../../src/core/preflight';
import { createRedactor } from '../../src/core/redact';
import { systemClock, type WorkflowContext } from '../../src/ports';
import { runPreflight } from '../../src/workflows/preflight';
import { assertNoLeaks, freshDatabases, type Pair, query, runCli, startPair } from '../helpers/clusters';
import { TIMESCALE_SETTINGS, timescaleForTests } from '../helpers/timescale';

const installed = await timescaleForTests('the TimescaleDB preflight tests');

const ctx: WorkflowContext = {
  emit: () => undefined,
  clock: systemClock,
  redactor: createRedactor(),
  env: process.env,
  stopSignal: new AbortController().signal,
};

async function preflight(
  uris: { source: string; target: string },
  options: { schemas?: string[] | null; allowTimescaledbVersionMismatch?: boolean } = {},
): Promise<PreflightReport> {
  return runPreflight(
    ctx,
    { source: parseConnInfo(uris.source, 'source'), target: parseConnInfo(uris.target, 'target') },
    {
      migrationId: 'default',
      schemas: options.schemas ?? null,
      pgBindir: undefined,
      walSampleMs: 200,
      allowTimescaledbVersionMismatch: options.allowTimescaledbVersionMismatch ?? false,
    },
  );
}

function only(report: PreflightReport, code: FindingCode): Finding {
  const matching = report.findings.filter((f) => f.code === code);
  expect(matching, `one ${code} in ${report.findings.map((f) => f.code).join(', ')}`).toHaveLength(1);
  return matching[0] as Finding;
}

const codes = (report: PreflightReport) => report.findings.map((f) => f.code);

/** Four daily chunks of `metrics` (one compressed), three weekly chunks of keyless `events`, a cagg, jobs. */
const SOURCE_SQL = `
  CREATE EXTENSION timescaledb;
  CREATE TABLE metrics (time timestamptz NOT NULL, device int NOT NULL, value double precision,
                        PRIMARY KEY (device, time));
  SELECT create_hypertable('metrics', by_range('time', INTERVAL '1 day'));
  -- Recent rows (the retention policy keeps a year), on chunk boundaries (which count from the epoch in UTC).
  INSERT INTO metrics SELECT t, d, d * 0.5
    FROM generate_series(date_trunc('day', now(), 'UTC') - INTERVAL '4 days',
                         date_trunc('day', now(), 'UTC') - INTERVAL '1 hour', INTERVAL '1 hour') t,
         generate_series(1, 3) d;
  CREATE TABLE events (time timestamptz NOT NULL, note text);
  SELECT create_hypertable('events', by_range('time', INTERVAL '7 days'));
  INSERT INTO events SELECT w - INTERVAL '21 days' + g * INTERVAL '1 day', 'e'
    FROM to_timestamp(floor(extract(epoch FROM now()) / 604800) * 604800) w, generate_series(0, 20) g;
  ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device',
                           timescaledb.compress_orderby = 'time DESC');
  SELECT compress_chunk(c) FROM show_chunks('metrics') c ORDER BY c LIMIT 1;
  CREATE MATERIALIZED VIEW metrics_daily WITH (timescaledb.continuous) AS
    SELECT time_bucket('1 day', time) AS day, device, avg(value) AS value FROM metrics GROUP BY 1, 2 WITH NO DATA;
  SELECT add_continuous_aggregate_policy('metrics_daily', start_offset => NULL, end_offset => INTERVAL '1 hour',
                                         schedule_interval => INTERVAL '1 hour');
  SELECT add_retention_policy('events', INTERVAL '1 year');
  CREATE PROCEDURE noop_job(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
  SELECT add_job('noop_job', INTERVAL '1 day', scheduled => false);
  CREATE TABLE plain (id int PRIMARY KEY, note text);
  CREATE SCHEMA other;
  CREATE TABLE other.accounts (id int PRIMARY KEY, name text);
`;

describe.skipIf(!installed)('preflight of TimescaleDB sources and targets', () => {
  let pair: Pair;
  /** A server without timescaledb in shared_preload_libraries. */
  let plain: LocalCluster;
  let uris: { source: string; target: string };
  let version: string;

  beforeAll(async () => {
    const binDir = await findPgBinDir(process.env);
    if (!binDir) throw new Error('No PostgreSQL server binaries found');
    [pair, plain] = await Promise.all([
      startPair({ source: TIMESCALE_SETTINGS, target: TIMESCALE_SETTINGS }),
      startLocalCluster({ name: 'plain', binDir }),
    ]);
    const [available] = await query<{ version: string }>(
      pair.source.uri(),
      `SELECT default_version AS version FROM pg_available_extensions WHERE name = 'timescaledb'`,
    );
    if (!available)
      throw new Error('timescaledb.control exists but pg_available_extensions does not list it');
    version = available.version;
    uris = await freshDatabases(pair, 'tsdb');
    await query(uris.source, SOURCE_SQL);
  });

  afterAll(async () => {
    try {
      if (pair) await assertNoLeaks(pair);
    } finally {
      await Promise.all([pair?.stop(), plain?.stop()]);
    }
  });

  it('passes a source with hypertables (as superuser) and reports each TimescaleDB feature with its treatment', async () => {
    const report = await preflight(uris);
    expect(report.findings.filter((f) => f.severity === 'error').map((f) => f.code)).toEqual([]);
    expect(report.ok).toBe(true);

    expect(only(report, 'TIMESCALEDB_VERSIONS')).toMatchObject({
      severity: 'info',
      message: `TimescaleDB ${version} on the source; on the target: not installed in the target database, available versions ${version} (default ${version}), in shared_preload_libraries.`,
    });

    const keyless = only(report, 'TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY');
    expect(keyless.severity).toBe('warning');
    expect(keyless.objects).toEqual(['public.events']);
    expect(keyless.fix).toContain('ALTER TABLE "public"."events" REPLICA IDENTITY FULL;');

    const compression = only(report, 'TIMESCALEDB_COMPRESSION');
    expect(compression.severity).toBe('warning');
    expect(compression.objects).toEqual(['public.metrics']);
    expect(compression.message).toContain(
      'public.metrics (1 of 4 chunks compressed; segmentby device; orderby time DESC)',
    );

    const caggs = only(report, 'TIMESCALEDB_CONTINUOUS_AGGREGATES');
    expect(caggs.severity).toBe('info');
    expect(caggs.objects).toEqual(['public.metrics_daily']);
    expect(caggs.message).toContain('public.metrics_daily on public.metrics');

    const jobs = only(report, 'TIMESCALEDB_JOBS');
    expect(jobs.severity).toBe('warning');
    expect(jobs.objects).toHaveLength(3);
    expect(jobs.message).toContain('3 background jobs (2 scheduled)');
    expect(jobs.message).toContain('continuous aggregate refresh policy on public.metrics_daily');
    expect(jobs.message).toContain('retention policy on public.events');
    expect(jobs.message).toMatch(/user job public\.noop_job \(job \d+, schedule_interval 1 day, paused\)/);

    // Chunks, compressed chunks and materialization tables are TimescaleDB's, not separate tables to
    // report; and the generic extension check leaves timescaledb to its own findings.
    expect(codes(report)).not.toContain('TABLES_WITHOUT_REPLICA_IDENTITY');
    expect(codes(report)).not.toContain('TARGET_EXTENSION_UNAVAILABLE');
    expect(codes(report)).not.toContain('TIMESCALEDB_VERSION_MISMATCH');
    expect(codes(report)).not.toContain('PREFLIGHT_CHECK_SKIPPED');
  });

  it('passes with --schema naming only schemas without hypertables', async () => {
    const report = await preflight(uris, { schemas: ['other'] });
    expect(report.findings.filter((f) => f.severity === 'error')).toEqual([]);
    expect(report.ok).toBe(true);
    expect(codes(report)).toContain('TIMESCALEDB_VERSIONS');
    for (const code of [
      'TIMESCALEDB_NOT_SUPPORTED_YET',
      'TIMESCALEDB_COMPRESSION',
      'TIMESCALEDB_CONTINUOUS_AGGREGATES',
      'TIMESCALEDB_JOBS',
    ] as const) {
      expect(codes(report)).not.toContain(code);
    }
  });

  it('warns that chunks created during the migration are copied again at cutover when the user is not superuser', async () => {
    await query(
      uris.source,
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ts_owner') THEN
           CREATE ROLE ts_owner LOGIN REPLICATION;
         END IF;
       END $$;
       GRANT pg_read_all_data TO ts_owner;
       GRANT CREATE ON DATABASE tsdb TO ts_owner`,
    );
    const report = await preflight({ source: pair.source.uri('tsdb', 'ts_owner'), target: uris.target });
    expect(only(report, 'TIMESCALEDB_NOT_SUPERUSER')).toMatchObject({
      severity: 'warning',
      objects: ['public.events', 'public.metrics'],
      message: expect.stringContaining('copied again at cutover'),
    });
  });

  it('accepts --allow-timescaledb-version-mismatch on the command line', async () => {
    const result = await runCli([
      'preflight',
      '--json',
      '--schema',
      'other',
      '--allow-timescaledb-version-mismatch',
      '--source',
      uris.source,
      '--target',
      uris.target,
    ]);
    expect(result.stderr).not.toContain('CONFIG_INVALID_OPTION');
    expect(result.code).toBe(0);
    expect((JSON.parse(result.stdout) as PreflightReport).ok).toBe(true);
  });

  it('refuses a target whose shared_preload_libraries lacks timescaledb', async () => {
    await query(plain.uri(), 'DROP DATABASE IF EXISTS tsdb_target WITH (FORCE)');
    await query(plain.uri(), 'CREATE DATABASE tsdb_target');
    const report = await preflight({ source: uris.source, target: plain.uri('tsdb_target') });
    expect(only(report, 'TIMESCALEDB_NOT_PRELOADED_ON_TARGET')).toMatchObject({
      severity: 'error',
      fix: expect.stringContaining("ALTER SYSTEM SET shared_preload_libraries = 'timescaledb';"),
    });
    expect(only(report, 'TIMESCALEDB_VERSIONS').message).toContain('not in shared_preload_libraries');
  });

  it('notes TimescaleDB on the target only (PostgreSQL to TimescaleDB) without failing', async () => {
    await query(plain.uri(), 'DROP DATABASE IF EXISTS app WITH (FORCE)');
    await query(plain.uri(), 'CREATE DATABASE app');
    await query(plain.uri('app'), 'CREATE TABLE readings (id int PRIMARY KEY, at timestamptz NOT NULL)');
    await query(pair.target.uri(), 'DROP DATABASE IF EXISTS app WITH (FORCE)');
    await query(pair.target.uri(), 'CREATE DATABASE app');
    await query(pair.target.uri('app'), 'CREATE EXTENSION timescaledb');
    const report = await preflight({ source: plain.uri('app'), target: pair.target.uri('app') });
    expect(report.ok).toBe(true);
    expect(only(report, 'TIMESCALEDB_ONLY_ON_TARGET')).toMatchObject({
      severity: 'info',
      message: expect.stringContaining(`TimescaleDB ${version} is installed in the target database`),
    });
    expect(codes(report)).not.toContain('TARGET_NOT_EMPTY');
  });

  it('fails, rather than passes, when the source user cannot read the TimescaleDB views', async () => {
    await query(
      uris.source,
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ts_reader') THEN
           CREATE ROLE ts_reader LOGIN REPLICATION;
         END IF;
       END $$;
       GRANT SELECT ON ALL TABLES IN SCHEMA public, other TO ts_reader;
       GRANT USAGE ON SCHEMA other TO ts_reader;
       REVOKE SELECT ON timescaledb_information.hypertables FROM PUBLIC`,
    );
    try {
      const report = await preflight({ source: pair.source.uri('tsdb', 'ts_reader'), target: uris.target });
      const blocked = only(report, 'TIMESCALEDB_NOT_SUPPORTED_YET');
      expect(blocked.severity).toBe('error');
      expect(blocked.message).toContain('could not be read');
      expect(blocked.message).toContain('permission denied');
    } finally {
      await query(uris.source, 'GRANT SELECT ON timescaledb_information.hypertables TO PUBLIC');
    }
  });
});
