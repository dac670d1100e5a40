// The TimescaleDB copy benchmark: one hypertable (daily chunks, the older half compressed) and a continuous
// aggregate on a source cluster with TimescaleDB preloaded, then rounds in which each way copies it into a
// fresh database of a target cluster: `ours` (pg-live-migrate copy: the schema through TimescaleDB's API,
// chunk by chunk, compressed chunks read in their compression order and compressed as they arrive, the
// aggregate's materialized rows copied) and `pgdump`
// (TimescaleDB's documented dump and restore: pg_dump -Fd -j, then timescaledb_pre_restore(), pg_restore
// in one job since its catalog's circular foreign keys fail in parallel, timescaledb_post_restore(); it
// carries compressed data and materializations as they are, and takes downtime). Each copy is checked:
// the hypertable's rows, its compressed chunks and the aggregate.
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findPgBinDir } from '../src/adapters/postgres/local-cluster.js';
import { buildClusterSettings, describeMachine, readLoadAverages, startCluster } from './copy.js';
import {
  buildRoundOrder,
  computeMedian,
  renderMarkdownTable,
  renderTextTable,
  type Table,
} from './copy-report.js';
import { throwIfInterrupted } from './interrupts.js';
import { describeFailure, isSuccess, runCommand } from './run-command.js';
import { withPgClient } from './with-pg-client.js';
import { writeResults } from './write-results';

export const TIMESCALE_TOOLS = ['ours', 'pgdump'] as const;
export type TimescaleTool = (typeof TIMESCALE_TOOLS)[number];

export interface TimescaleBenchmarkOptions {
  /** Rows of the hypertable. */
  rows: number;
  jobs: number;
  repeat: number;
  tools: TimescaleTool[];
  tmpDir?: string;
  repoRoot: string;
  resultsDir: string;
  log: (line: string) => void;
}

interface Facts {
  rows: number;
  chunks: number;
  compressed: number;
  aggregateRows: number;
}

interface TimescaleRun {
  tool: TimescaleTool;
  round: number;
  status: 'ok' | 'failed';
  seconds: number;
  facts: Facts | null;
  error?: string;
}

const DAYS = 40;

const datasetSql = (rows: number) => {
  const devices = 10;
  const stepSeconds = Math.max(1, Math.floor((DAYS * 86400 * devices) / rows));
  return `
    CREATE EXTENSION timescaledb;
    CREATE TABLE metrics (time timestamptz NOT NULL, device int NOT NULL, value double precision, note text,
                          PRIMARY KEY (device, time));
    SELECT create_hypertable('metrics', by_range('time', INTERVAL '1 day'));
    INSERT INTO metrics
      SELECT t, d, random() * 100, CASE WHEN random() < 0.1 THEN 'note ' || d END
        FROM generate_series(date_trunc('day', now(), 'UTC') - INTERVAL '${DAYS} days',
                             date_trunc('day', now(), 'UTC') - INTERVAL '1 second', INTERVAL '${stepSeconds} seconds') t,
             generate_series(1, ${devices}) d;
    ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device',
                             timescaledb.compress_orderby = 'time DESC');
    CREATE MATERIALIZED VIEW metrics_hourly WITH (timescaledb.continuous) AS
      SELECT time_bucket('1 hour', time) AS hour, device, avg(value) AS value, count(*) AS n
        FROM metrics GROUP BY 1, 2 WITH NO DATA;`;
};

const FACTS_SQL = `SELECT (SELECT count(*) FROM metrics)::bigint AS rows,
  (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics')::int AS chunks,
  (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed)::int AS compressed,
  (SELECT count(*) FROM metrics_hourly)::bigint AS aggregate_rows`;

async function readFacts(uri: string): Promise<Facts> {
  return withPgClient(uri, async (client) => {
    const { rows } = await client.query(FACTS_SQL);
    const r = rows[0];
    return {
      rows: Number(r.rows),
      chunks: Number(r.chunks),
      compressed: Number(r.compressed),
      aggregateRows: Number(r.aggregate_rows),
    };
  });
}

export async function runTimescaleBenchmark(options: TimescaleBenchmarkOptions) {
  const { log } = options;
  const startedAt = new Date();
  const loadAtStart = readLoadAverages();
  const binDir = await findPgBinDir(process.env);
  if (!binDir) throw new Error('No PostgreSQL server binaries found: set PG_BINDIR or install postgresql.');
  const parentDir = options.tmpDir ?? join(tmpdir(), 'plm-bench');
  await mkdir(parentDir, { recursive: true });
  const runDir = await mkdtemp(join(parentDir, 'timescale-'));
  await chmod(runDir, 0o755);
  const settings = {
    ...buildClusterSettings(options.jobs),
    shared_preload_libraries: "'timescaledb'",
    'timescaledb.telemetry_level': 'off',
  };
  const source = await startCluster('source', binDir, settings, runDir);
  const target = await startCluster('target', binDir, settings, runDir);
  try {
    const sourceUri = source.cluster.uri('bench');
    await withPgClient(source.cluster.uri(), (c) => c.query('CREATE DATABASE bench'));
    log(`generating ${options.rows.toLocaleString('en-US')} rows over ${DAYS} daily chunks`);
    await withPgClient(sourceUri, async (c) => {
      await c.query(datasetSql(options.rows));
      await c.query(
        `SELECT compress_chunk(c) FROM show_chunks('metrics', older_than => now() - INTERVAL '${DAYS / 2} days') c`,
      );
      await c.query(`CALL refresh_continuous_aggregate('metrics_hourly', NULL, NULL)`);
      await c.query('VACUUM ANALYZE');
    });
    const expected = await readFacts(sourceUri);
    const sourceBytes = await withPgClient(sourceUri, async (c) =>
      Number((await c.query(`SELECT pg_database_size(current_database()) AS b`)).rows[0].b),
    );
    log(
      `dataset: ${expected.rows} rows, ${expected.chunks} chunks (${expected.compressed} compressed), ${expected.aggregateRows} aggregate rows, ${(sourceBytes / 1e6).toFixed(0)} MB`,
    );

    const rounds = Array.from({ length: options.repeat }, (_, i) => buildRoundOrder(options.tools, i));
    const runs: TimescaleRun[] = [];
    let counter = 0;
    for (const [index, order] of rounds.entries()) {
      for (const tool of order) {
        throwIfInterrupted();
        counter += 1;
        const database = `copy_${tool}_${counter}`;
        await withPgClient(target.cluster.uri(), (c) => c.query(`CREATE DATABASE ${database}`));
        const targetUri = target.cluster.uri(database);
        const workDir = join(runDir, database);
        await mkdir(workDir, { recursive: true });
        log(`round ${index + 1}: ${tool}`);
        const started = performance.now();
        let error: string | undefined;
        try {
          if (tool === 'ours') await copyWithOurs(options, sourceUri, targetUri, workDir);
          else await copyWithPgDump(options, binDir, sourceUri, targetUri, workDir);
        } catch (e) {
          error = (e as Error).message;
        }
        const seconds = (performance.now() - started) / 1000;
        const facts = error ? null : await readFacts(targetUri).catch(() => null);
        const matches =
          facts !== null &&
          facts.rows === expected.rows &&
          facts.compressed === expected.compressed &&
          facts.chunks === expected.chunks;
        if (!error && !matches)
          error = `target differs: ${JSON.stringify(facts)} (source ${JSON.stringify(expected)})`;
        runs.push({
          tool,
          round: index + 1,
          status: error ? 'failed' : 'ok',
          seconds,
          facts,
          ...(error ? { error } : {}),
        });
        log(`  ${tool}: ${seconds.toFixed(1)} s${error ? ` FAILED: ${error}` : ''}`);
        await withPgClient(target.cluster.uri(), (c) => c.query(`DROP DATABASE ${database} WITH (FORCE)`));
        await withPgClient(sourceUri, (c) =>
          c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots`),
        );
        await withPgClient(sourceUri, async (c) => {
          for (const { pubname } of (await c.query('SELECT pubname FROM pg_publication')).rows)
            await c.query(`DROP PUBLICATION "${pubname}"`);
        });
      }
    }
    const postgres = await runCommand({
      file: join(binDir, 'postgres'),
      args: ['--version'],
      timeoutMs: 10_000,
    });
    const median = (tool: TimescaleTool) =>
      computeMedian(runs.filter((r) => r.tool === tool && r.status === 'ok').map((r) => r.seconds));
    const ours = median('ours');
    const peer = median('pgdump');
    const report = {
      benchmark: 'timescale',
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: describeMachine(postgres.stdoutTail.trim(), undefined, loadAtStart),
      options: { rows: options.rows, jobs: options.jobs, repeat: options.repeat, tools: options.tools },
      dataset: { ...expected, bytes: sourceBytes },
      summary: {
        oursMedianSeconds: ours ?? null,
        pgdumpMedianSeconds: peer ?? null,
        pgdumpOverOurs: ours && peer ? peer / ours : null,
      },
      runs,
    };
    const table = renderTimescaleTable(runs);
    const ratio =
      report.summary.pgdumpOverOurs === null
        ? 'no ratio (a tool failed every round)'
        : `pgdump/ours = ${report.summary.pgdumpOverOurs.toFixed(2)} (above 1: pg-live-migrate was faster)`;
    const markdown = `# TimescaleDB copy benchmark\n\n${report.startedAt}, ${report.machine.cpus} CPUs, load at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}; ${postgres.stdoutTail.trim()}.\n\nDataset: ${expected.rows} rows in ${expected.chunks} daily chunks (${expected.compressed} compressed), a continuous aggregate of ${expected.aggregateRows} rows, ${(sourceBytes / 1e6).toFixed(0)} MB; jobs ${options.jobs}.\n\n${renderMarkdownTable(table)}\n\n${ratio}. \`ours\` is \`pg-live-migrate copy\` (a live migration's copy phase: the source stays writable); \`pgdump\` is pg_dump -Fd -j${options.jobs} then pg_restore in one job between timescaledb_pre_restore() and timescaledb_post_restore() (the documented offline way; a parallel pg_restore fails on TimescaleDB's catalog).\n`;
    const paths = await writeResults('timescale', report, markdown, options.resultsDir, startedAt);
    return { report, text: `${renderTextTable(table)}\n${ratio}`, ...paths };
  } finally {
    await target.stop();
    await source.stop();
    await rm(runDir, { recursive: true, force: true });
  }
}

function renderTimescaleTable(runs: TimescaleRun[]): Table {
  return {
    header: ['round', 'tool', 'seconds', 'rows', 'compressed chunks', 'aggregate rows', 'status'],
    numeric: new Set([0, 2, 3, 4, 5]),
    rows: runs.map((r) => [
      String(r.round),
      r.tool,
      r.seconds.toFixed(1),
      String(r.facts?.rows ?? ''),
      String(r.facts?.compressed ?? ''),
      String(r.facts?.aggregateRows ?? ''),
      r.status === 'ok' ? 'ok' : `failed: ${r.error ?? ''}`.slice(0, 120),
    ]),
  };
}

async function copyWithOurs(options: TimescaleBenchmarkOptions, source: string, target: string, dir: string) {
  const outcome = await runCommand({
    file: process.execPath,
    args: [
      join(options.repoRoot, 'dist/cli.js'),
      'copy',
      '--source',
      source,
      '--target',
      target,
      '--dir',
      dir,
      '--table-jobs',
      String(options.jobs),
      '--index-jobs',
      String(options.jobs),
    ],
    timeoutMs: 3600_000,
  });
  // The copy leaves its slot for the replay (removed after the run). The aggregate's materialized rows come
  // with the copy, as with the dump: the cutover's refresh is for what changes during the replay.
  if (!isSuccess(outcome)) throw new Error(describeFailure('pg-live-migrate copy', outcome));
}

async function copyWithPgDump(
  options: TimescaleBenchmarkOptions,
  binDir: string,
  source: string,
  target: string,
  dir: string,
) {
  const dumpDir = join(dir, 'dump');
  const dump = await runCommand({
    file: join(binDir, 'pg_dump'),
    args: ['-Fd', '-j', String(options.jobs), '-f', dumpDir, '-d', source],
    timeoutMs: 3600_000,
  });
  if (!isSuccess(dump)) throw new Error(describeFailure('pg_dump', dump));
  await withPgClient(target, (c) =>
    c.query('CREATE EXTENSION timescaledb; SELECT timescaledb_pre_restore()'),
  );
  const restore = await runCommand({
    file: join(binDir, 'pg_restore'),
    args: ['-d', target, dumpDir],
    timeoutMs: 3600_000,
  });
  if (!isSuccess(restore)) throw new Error(describeFailure('pg_restore', restore));
  await withPgClient(target, (c) => c.query('SELECT timescaledb_post_restore()'));
}
