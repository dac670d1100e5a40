// The replay benchmark: one source cluster with pgbench tables, then rounds in which each tool, on a target
// cluster of its own, (1) replays a pgbench TPC-B load while its lag is sampled every 200 ms, and (2) drains a
// backlog written while it was stopped. Lag and drain are measured the same way for every tool: positions read
// from the servers, and a marker row written on the source after the load whose arrival on the target ends it.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { findPgBinDir, type LocalCluster } from '../src/adapters/postgres/local-cluster.js';
import {
  buildClusterSettings,
  checkFreeDisk,
  describeMachine,
  dropLeftoversOnSource,
  readLoadAverages,
  startCluster,
} from './copy.js';
import { buildRoundOrder } from './copy-report.js';
import { ensureDebianPackages } from './ensure-debian-packages.js';
import { isInterrupted, onInterrupt, throwIfInterrupted } from './interrupts.js';
import {
  BACKLOG_TABLE,
  type BacklogKind,
  type BacklogMix,
  BENCH_DATABASE,
  buildBacklogMixes,
  buildBacklogSql,
  countBacklogTransactions,
  createReplayDataset,
  diffFingerprints,
  MARKER_TABLE,
  readFingerprints,
} from './replay-dataset.js';
import { computeLagPoints, formatLsn, type LagSample, parseLsn, summarizeLag } from './replay-lag.js';
import {
  createReplayPeer,
  REPLAY_TOOL_LABELS,
  type ReplayPeer,
  type ReplayTool,
  readPgcopydbVersion,
} from './replay-peers.js';
import {
  type BacklogPart,
  type BacklogResult,
  checkReplayTargets,
  type KeepUpResult,
  type ReplayReport,
  type ReplayRun,
  renderReplayMarkdown,
  summarizeReplayRuns,
} from './replay-report.js';
import { describeFailure, findOnPath, isSuccess, runCommand } from './run-command.js';
import { withPgClient } from './with-pg-client.js';
import { writeResults } from './write-results';

export interface ReplayBenchmarkOptions {
  /** pgbench scale of the source (100,000 pgbench_accounts rows per unit). */
  scale: number;
  /** Jobs for each tool's initial copy. */
  jobs: number;
  repeat: number;
  /** Length of the pgbench run of the keep-up phase. */
  keepUpSeconds: number;
  /** Rows inserted by the backlog (a multiple of 100,000); half as many are updated and as many deleted. */
  backlogInserts: number;
  tools: ReplayTool[];
  tmpDir?: string;
  repoRoot: string;
  resultsDir: string;
  log: (line: string) => void;
}

export interface ReplayBenchmarkOutcome {
  report: ReplayReport;
  jsonPath: string;
  markdownPath: string;
}

/** The issue's keep-up load: pgbench's default TPC-B-like script, 4 clients on 2 threads. */
const PGBENCH_CLIENTS = 4;
const PGBENCH_THREADS = 2;
const SAMPLE_INTERVAL_MS = 200;
const MARKER_POLL_MS = 50;
/** A tool whose applied position has not moved for this long while the marker is not there is stuck. */
const STALL_MS = 60_000;
const DRAIN_TIMEOUT_MS = 15 * 60_000;

/**
 * The copy benchmark's settings (the same for the source and every target), with synchronous_commit back at
 * its default `on`: with `off` a walsender only sends WAL once the WAL writer has flushed it (every 200 ms),
 * which would add up to 200 ms of lag to every tool. fsync stays off, so a flush is a write() without fsync.
 */
export function buildReplayClusterSettings(jobs: number): Record<string, string | number> {
  return { ...buildClusterSettings(jobs), synchronous_commit: 'on' };
}

export async function runReplayBenchmark(options: ReplayBenchmarkOptions): Promise<ReplayBenchmarkOutcome> {
  const { log } = options;
  const startedAt = new Date();
  const loadAtStart = readLoadAverages();
  const mixes = buildBacklogMixes(options.backlogInserts);
  const binDir = await findPgBinDir(process.env);
  if (!binDir) {
    throw new Error(
      'No PostgreSQL server binaries found: set PG_BINDIR or install postgresql (apt-get install postgresql).',
    );
  }
  const postgresVersion = (
    await runCommand({ file: join(binDir, 'postgres'), args: ['--version'], timeoutMs: 10_000 })
  ).stdoutTail.trim();
  const major = /(\d+)(?:\.\d+)?/.exec(postgresVersion.replace(/^\D+/, ''))?.[1] ?? '';
  if (options.tools.includes('pgcopydb')) {
    // pgcopydb (0.10 in Debian 12) decodes with wal2json, which is a server plugin of the source's major version.
    const wal2json = join(binDir, '..', 'lib', 'wal2json.so');
    const packages = await ensureDebianPackages(
      [
        { name: 'pgcopydb', isPresent: () => findOnPath('pgcopydb') !== undefined },
        { name: `postgresql-${major}-wal2json`, isPresent: () => existsSync(wal2json) },
      ],
      log,
    );
    for (const pkg of packages.filter((p) => p.status !== 'present'))
      log(`package ${pkg.name}: ${pkg.status}${pkg.detail ? ` (${pkg.detail})` : ''}`);
  }

  const parentDir = options.tmpDir ?? join(tmpdir(), 'plm-bench');
  await mkdir(parentDir, { recursive: true });
  await checkFreeDisk(parentDir, options.scale + Math.ceil(options.backlogInserts / 100_000));
  const runDir = await mkdtemp(join(parentDir, 'replay-'));
  await chmod(runDir, 0o755);
  const removeRunDir = onInterrupt(() => rm(runDir, { recursive: true, force: true }));
  try {
    // Other work may rebuild dist/ while the benchmark runs: every run of ours uses this one copy.
    const distCli = join(options.repoRoot, 'dist', 'cli.js');
    const cliPath = join(runDir, 'cli.js');
    const build = await readBuild(options.repoRoot, distCli);
    if (existsSync(distCli)) await copyFile(distCli, cliPath);
    const settings = buildReplayClusterSettings(options.jobs);
    const source = await startCluster('source', binDir, settings, runDir);
    try {
      log(`source cluster on port ${source.cluster.port}; pgbench -i -s ${options.scale}`);
      const generateStarted = performance.now();
      await createReplayDataset(source.cluster, options.scale);
      const generateSeconds = (performance.now() - generateStarted) / 1000;
      const databaseBytes = await withPgClient(source.cluster.uri(BENCH_DATABASE), async (client) =>
        Number(
          (await client.query<{ bytes: string }>('SELECT pg_database_size(current_database()) AS bytes'))
            .rows[0]?.bytes ?? 0,
        ),
      );
      const rounds = Array.from({ length: options.repeat }, (_, round) =>
        buildRoundOrder(options.tools, round),
      );
      const runs: ReplayRun[] = [];
      const measurement: ReplayReport['measurement'] = {};
      const markers = { next: 1 };
      for (const [index, order] of rounds.entries()) {
        const round = index + 1;
        log(`round ${round}/${rounds.length}: ${order.join(', ')}`);
        for (const [place, tool] of order.entries()) {
          throwIfInterrupted();
          const run = await runTool(
            { tool, round, position: place + 1 },
            {
              ...options,
              binDir,
              settings,
              runDir,
              cliPath,
              mixes,
              markers,
              measurement,
              timeoutMs: (600 + options.scale * 36) * 1000,
            },
            source.cluster,
          );
          runs.push(run);
        }
      }
      const summary = summarizeReplayRuns(runs, options.tools);
      const report: ReplayReport = {
        benchmark: 'replay',
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        machine: describeMachine(
          postgresVersion,
          options.tools.includes('pgcopydb') ? await readPgcopydbVersion() : undefined,
          loadAtStart,
        ),
        build,
        options: {
          scale: options.scale,
          jobs: options.jobs,
          repeat: options.repeat,
          keepUpSeconds: options.keepUpSeconds,
          backlogInserts: options.backlogInserts,
          tools: options.tools,
        },
        workload: {
          pgbench: `pgbench -n -c ${PGBENCH_CLIENTS} -j ${PGBENCH_THREADS} -T ${options.keepUpSeconds}`,
          backlog: (['insert', 'update', 'delete'] as const).map((kind) => describeMix(mixes[kind])),
          sampleIntervalMs: SAMPLE_INTERVAL_MS,
        },
        measurement,
        rounds,
        clusterSettings: settings,
        dataset: { generateSeconds, databaseBytes },
        summary,
        targets: checkReplayTargets(runs, summary),
        runs,
      };
      const paths = await writeReport(report, options.resultsDir, startedAt);
      return { report, ...paths };
    } finally {
      await source.stop();
    }
  } finally {
    removeRunDir();
    await rm(runDir, { recursive: true, force: true });
  }
}

function describeMix(mix: BacklogMix): string {
  const rows = (count: number) => count.toLocaleString('en-US');
  const hundreds = Math.floor(mix.singles / mix.hundredEvery);
  const tens = Math.floor(mix.singles / mix.tenThousandEvery);
  return (
    `${mix.kind}: ${rows(mix.rows)} rows of ${BACKLOG_TABLE} (ids from ${rows(mix.firstId)}) in ` +
    `${rows(countBacklogTransactions(mix))} transactions, interleaved: ${rows(mix.singles)} of 1 row, ` +
    `${rows(hundreds)} of 100 rows (after every ${mix.hundredEvery}th 1-row one), ${rows(tens)} of 10,000 rows ` +
    `(after every ${rows(mix.tenThousandEvery)}th)${mix.big ? `, 1 of ${rows(mix.big.rows)} rows (after the ${rows(mix.big.at)}th)` : ''}`
  );
}

interface RunToolContext extends ReplayBenchmarkOptions {
  binDir: string;
  settings: Record<string, string | number>;
  runDir: string;
  cliPath: string;
  mixes: Record<BacklogKind, BacklogMix>;
  /** The next marker id: unique over the whole benchmark. */
  markers: { next: number };
  measurement: ReplayReport['measurement'];
  timeoutMs: number;
}

/** A failure of the tool under test (not of the harness): the report shows the tool's own output with it. */
class ToolFailure extends Error {}

async function runTool(
  place: Pick<ReplayRun, 'tool' | 'round' | 'position'>,
  context: RunToolContext,
  source: LocalCluster,
): Promise<ReplayRun> {
  const { tool, round } = place;
  const log = (line: string) => context.log(`round ${round} ${tool}: ${line}`);
  const run: ReplayRun = { ...place, status: 'ok', memoryKiB: {}, commands: [], notes: [] };
  if (tool === 'ours' && !existsSync(context.cliPath)) {
    return { ...run, status: 'failed', error: 'dist/cli.js not found: run `npm run build`' };
  }
  if (tool === 'pgcopydb' && !findOnPath('pgcopydb')) {
    return {
      ...run,
      status: 'skipped',
      error: 'pgcopydb is not installed and apt-get could not install it (Debian package `pgcopydb`)',
    };
  }
  log(`${REPLAY_TOOL_LABELS[tool]}: starting a fresh target cluster`);
  const target = await startCluster(
    `target-r${round}-${tool}`,
    context.binDir,
    context.settings,
    context.runDir,
  );
  const workDir = join(context.runDir, `work-r${round}-${tool}`);
  await mkdir(workDir, { recursive: true });
  const sourceUri = source.uri(BENCH_DATABASE);
  const targetUri = target.cluster.uri(BENCH_DATABASE);
  const peer = createReplayPeer(tool, {
    source,
    target: target.cluster,
    jobs: context.jobs,
    workDir,
    cliPath: context.cliPath,
    binDir: context.binDir,
    timeoutMs: context.timeoutMs,
    log,
  });
  run.commands = peer.commands;
  run.notes = [...peer.notes];
  context.measurement[tool] = { appliedPosition: peer.appliedPosition, memory: peer.memoryMetric };
  const clients: pg.Client[] = [];
  try {
    await withPgClient(target.cluster.uri(), async (client) => {
      await client.query(`CREATE DATABASE ${BENCH_DATABASE}`);
      await client.query('CHECKPOINT');
    });
    // Every tool starts from the same source state: dead tuples of the previous run's load vacuumed away.
    await withPgClient(sourceUri, async (client) => {
      await client.query('VACUUM ANALYZE');
      await client.query('CHECKPOINT');
    });
    const connect = async (uri: string) => {
      const client = new pg.Client({ connectionString: uri, application_name: 'plm-bench' });
      clients.push(client);
      await client.connect();
      return client;
    };
    const control = { source: await connect(sourceUri), target: await connect(targetUri) };
    const memory = createMemoryTracker(peer);

    // Setup: the tool copies the source and starts replaying. A first marker may arrive with the copy (it can
    // be written before the tool's snapshot); one written after that arrival can only come through the replay.
    run.loadAverageAtStart = readLoadAverages()[0];
    log(`setup (load average ${run.loadAverageAtStart.toFixed(2)})`);
    const setupStarted = performance.now();
    await peer.start();
    for (const note of ['setup, maybe copied', 'setup, replayed']) {
      const marker = await writeMarker(control.source, context.markers, note);
      await waitForMarker(control.target, peer, marker.id, {
        timeoutMs: context.timeoutMs,
        stallMs: context.timeoutMs,
        onSecond: memory.sample,
      });
    }
    run.setupSeconds = (performance.now() - setupStarted) / 1000;
    log(`ready in ${run.setupSeconds.toFixed(1)} s; keep-up: pgbench for ${context.keepUpSeconds} s`);

    // The sampler has connections of its own, so the marker polling never delays a sample.
    const sampling = { source: await connect(sourceUri), target: await connect(targetUri) };
    run.keepUp = await runKeepUp(run, context, peer, control, sampling, memory, sourceUri);
    run.memoryKiB.setupAndKeepUp = await memory.take();
    log(
      `keep-up: lag p50/p99/max ${formatSeconds(run.keepUp.lag?.seconds.p50)}/${formatSeconds(run.keepUp.lag?.seconds.p99)}/` +
        `${formatSeconds(run.keepUp.lag?.seconds.max)} s, caught up ${run.keepUp.catchUpSeconds?.toFixed(2)} s after the writes`,
    );

    run.backlog = { totalRows: context.backlogInserts * 2 };
    const inserts = await runBacklogPart(context, peer, control, memory, [context.mixes.insert], log);
    run.backlog.inserts = inserts;
    run.memoryKiB.insertsDrain = await memory.take();
    const changes = await runBacklogPart(
      context,
      peer,
      control,
      memory,
      [context.mixes.update, context.mixes.delete],
      log,
    );
    run.backlog.updatesDeletes = changes;
    run.memoryKiB.updatesDeletesDrain = await memory.take();
    completeBacklog(run.backlog);

    // The source is quiet since the last marker, which is on the target: both must hold the same rows.
    // The last marker is the one just before the next id and its nudge.
    const lastMarkerId = context.markers.next - 2;
    const [expected, actual] = [
      await readFingerprints(control.source, lastMarkerId),
      await readFingerprints(control.target, lastMarkerId),
    ];
    const mismatches = diffFingerprints(expected, actual);
    if (mismatches.length > 0) throw new ToolFailure(`target differs from source: ${mismatches.join('; ')}`);
    await peer.stop();
  } catch (error) {
    if (isInterrupted()) throw error;
    run.status = 'failed';
    const output = error instanceof ToolFailure ? await peer.describeOutput().catch(() => '') : '';
    run.error = `${(error as Error).message}${output ? `\n${output}` : ''}`;
    log(`failed: ${run.error.split('\n')[0]}`);
  } finally {
    for (const client of clients) await client.end().catch(() => undefined);
    const peaks = Object.values(run.memoryKiB).filter((kib): kib is number => kib !== undefined);
    if (peaks.length > 0) run.peakMemoryKiB = Math.max(...peaks);
    if (!isInterrupted()) {
      await peer.cleanup().catch((error: Error) => {
        run.notes.push(`Cleanup failed: ${error.message.split('\n')[0]}`);
      });
      await finishOnSource(run, source);
    }
    await target.stop();
  }
  log(
    `${run.status}` +
      (run.backlog?.rowsPerSecond !== undefined
        ? `: backlog ${Math.round(run.backlog.rowsPerSecond).toLocaleString('en-US')} rows/s`
        : ''),
  );
  return run;
}

const formatSeconds = (value: number | undefined) => (value === undefined ? '—' : value.toFixed(3));

/** Drops what the tool left on the source (it must leave nothing: say so), and empties the backlog table. */
async function finishOnSource(run: ReplayRun, source: LocalCluster): Promise<void> {
  const leftovers = await dropLeftoversOnSource(source).catch((error: Error) => ({
    dropped: [],
    remaining: [`unknown (${error.message})`],
  }));
  if (leftovers.dropped.length > 0)
    run.notes.push(
      `Left on the source after its cleanup and dropped by the benchmark: ${leftovers.dropped.join(', ')}.`,
    );
  if (leftovers.remaining.length > 0) {
    run.status = 'failed';
    run.error = `could not drop from the source: ${leftovers.remaining.join(', ')}; later runs may be skewed${run.error ? `\n${run.error}` : ''}`;
  }
  await withPgClient(source.uri(BENCH_DATABASE), async (client) => {
    // pgcopydb's sentinel lives on the source; its cleanup drops it, but a failed cleanup must not leak it.
    const { rowCount } = await client.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgcopydb'`);
    if (rowCount) {
      await client.query('DROP SCHEMA pgcopydb CASCADE');
      run.notes.push('Schema pgcopydb (its sentinel) was left on the source and dropped by the benchmark.');
    }
    await client.query(`TRUNCATE ${BACKLOG_TABLE}`);
  });
}

interface ControlClients {
  source: pg.Client;
  target: pg.Client;
}

interface MemoryTracker {
  /** Reads the tool's memory now; keeps the highest value of the phase. */
  sample: () => Promise<void>;
  /** Samples once more, returns the phase's highest value and starts a new phase. */
  take: () => Promise<number | undefined>;
}

function createMemoryTracker(peer: ReplayPeer): MemoryTracker {
  let peak: number | undefined;
  const sample = async () => {
    const kib = await peer.readMemoryKiB().catch(() => undefined);
    if (kib !== undefined) peak = Math.max(peak ?? 0, kib);
  };
  return {
    sample,
    take: async () => {
      await sample();
      const value = peak;
      peak = undefined;
      return value;
    },
  };
}

async function runKeepUp(
  run: ReplayRun,
  context: RunToolContext,
  peer: ReplayPeer,
  control: ControlClients,
  sampling: ControlClients,
  memory: MemoryTracker,
  sourceUri: string,
): Promise<KeepUpResult> {
  const result: KeepUpResult = { seconds: context.keepUpSeconds, series: [] };
  run.keepUp = result;
  const sampler = startLagSampler(sampling.source, sampling.target, peer, memory);
  let window: { fromMs: number; toMs: number } | undefined;
  try {
    // A second of samples before the load starts: the timeline must reach back before the first write.
    await sleep(1000);
    const fromMs = performance.now();
    const pgbench = await runCommand({
      file: join(context.binDir, 'pgbench'),
      args: [
        '-n',
        '-c',
        String(PGBENCH_CLIENTS),
        '-j',
        String(PGBENCH_THREADS),
        '-T',
        String(context.keepUpSeconds),
        sourceUri,
      ],
      timeoutMs: (context.keepUpSeconds + 120) * 1000,
    });
    const toMs = performance.now();
    window = { fromMs, toMs };
    if (!isSuccess(pgbench)) throw new Error(describeFailure('pgbench', pgbench));
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(pgbench.stdoutTail)?.[1];
    result.pgbenchTps = tps === undefined ? undefined : Number(tps);
    const marker = await writeMarker(control.source, context.markers, 'keep-up end');
    result.catchUpSeconds = await waitForMarker(control.target, peer, marker.id, {
      timeoutMs: DRAIN_TIMEOUT_MS,
      stallMs: STALL_MS,
      onSecond: memory.sample,
    });
  } finally {
    const samples = await sampler.stop();
    if (window) {
      // A position older than the load start counts from the load start: before it the source only wrote the
      // harness's markers and its own idle records, which native and pgcopydb report no position past.
      const points = computeLagPoints(samples, (sample) => sample.appliedLsn, window.fromMs);
      result.lag = summarizeLag(points, window.fromMs, window.toMs);
      result.confirmedLag = summarizeLag(
        computeLagPoints(samples, (sample) => sample.confirmedLsn, window.fromMs),
        window.fromMs,
        window.toMs,
      );
      const start = window.fromMs;
      let nextSecond = 0;
      for (const point of points) {
        const at = (point.atMs - start) / 1000;
        if (at < nextSecond || point.atMs > window.toMs) continue;
        result.series.push([
          Math.round(at * 10) / 10,
          point.lagBytes,
          Math.round(point.lagSeconds * 1000) / 1000,
        ]);
        nextSecond = Math.floor(at) + 1;
      }
    }
    if (sampler.errors.length > 0)
      run.notes.push(`Lag sampler: ${sampler.errors.length} failed sample(s), first: ${sampler.errors[0]}`);
  }
  return result;
}

interface LagSampler {
  readonly errors: string[];
  /** Stops sampling and returns every sample taken. */
  stop: () => Promise<LagSample[]>;
}

/** Every 200 ms: the source's WAL position and the slot's confirmed position, then the tool's applied one. */
function startLagSampler(
  source: pg.Client,
  target: pg.Client,
  peer: ReplayPeer,
  memory: MemoryTracker,
): LagSampler {
  const samples: LagSample[] = [];
  const errors: string[] = [];
  let stopped = false;
  const loop = (async () => {
    const started = performance.now();
    for (let tick = 0; !stopped; tick += 1) {
      try {
        const sourceAtMs = performance.now();
        const { rows } = await source.query<{ lsn: string; confirmed: string | null }>(
          `SELECT pg_current_wal_lsn()::text AS lsn,
                  (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1) AS confirmed`,
          [peer.slotName],
        );
        const appliedLsn = await peer.readApplied(target);
        const appliedAtMs = performance.now();
        const row = rows[0];
        if (row) {
          samples.push({
            sourceAtMs,
            sourceLsn: parseLsn(row.lsn),
            appliedAtMs,
            appliedLsn,
            confirmedLsn: row.confirmed ? parseLsn(row.confirmed) : undefined,
          });
        }
        if (tick % 5 === 0) await memory.sample();
      } catch (error) {
        errors.push((error as Error).message);
      }
      // Fixed cadence: sleep to the next multiple of the interval, however long the queries took.
      const next = started + (tick + 1) * SAMPLE_INTERVAL_MS;
      await sleep(Math.max(0, next - performance.now()));
    }
  })();
  return {
    errors,
    stop: async () => {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

async function runBacklogPart(
  context: RunToolContext,
  peer: ReplayPeer,
  control: ControlClients,
  memory: MemoryTracker,
  mixes: BacklogMix[],
  log: (line: string) => void,
): Promise<BacklogPart> {
  const name = mixes.map((mix) => `${mix.kind}s`).join(' + ');
  await memory.sample();
  await peer.stop();
  const startLsn = await readSourceLsn(control.source);
  const generateStarted = performance.now();
  for (const mix of mixes) {
    throwIfInterrupted();
    await control.source.query(buildBacklogSql(mix));
  }
  const generateSeconds = (performance.now() - generateStarted) / 1000;
  const marker = await writeMarker(control.source, context.markers, `${name} end`);
  const part: BacklogPart = {
    rows: mixes.reduce((sum, mix) => sum + mix.rows, 0),
    transactions: mixes.reduce((sum, mix) => sum + countBacklogTransactions(mix), 0),
    generateSeconds,
    walBytes: Number(marker.lsn - startLsn),
  };
  log(
    `backlog ${name}: ${part.rows.toLocaleString('en-US')} rows in ${part.transactions.toLocaleString('en-US')} ` +
      `transactions, ${(part.walBytes / 1e6).toFixed(0)} MB of WAL written in ${generateSeconds.toFixed(1)} s ` +
      `(up to ${formatLsn(marker.lsn)}); resuming`,
  );
  const resumed = performance.now();
  await peer.resume();
  await waitForMarker(control.target, peer, marker.id, {
    timeoutMs: DRAIN_TIMEOUT_MS,
    stallMs: STALL_MS,
    onSecond: memory.sample,
  });
  part.drainSeconds = (performance.now() - resumed) / 1000;
  part.rowsPerSecond = part.rows / part.drainSeconds;
  // The resumed process started with the drain, so its CPU time so far is the drain's (and its start-up's).
  part.toolCpuSeconds = await peer.readCpuSeconds().catch(() => undefined);
  log(
    `backlog ${name}: drained in ${part.drainSeconds.toFixed(1)} s (${Math.round(part.rowsPerSecond).toLocaleString('en-US')} rows/s` +
      `${part.toolCpuSeconds === undefined ? '' : `; the tool used ${part.toolCpuSeconds.toFixed(1)} s of CPU`})`,
  );
  return part;
}

function completeBacklog(backlog: BacklogResult): void {
  const inserts = backlog.inserts?.drainSeconds;
  const changes = backlog.updatesDeletes?.drainSeconds;
  if (inserts === undefined || changes === undefined) return;
  backlog.drainSeconds = inserts + changes;
  backlog.rowsPerSecond = backlog.totalRows / backlog.drainSeconds;
}

async function readSourceLsn(source: pg.Client): Promise<bigint> {
  const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return parseLsn(rows[0]?.lsn ?? '0/0');
}

/**
 * Commits a marker row on the source after everything the tool must apply. The marker's arrival on the target
 * proves the tool applied every transaction committed before it, whatever position it reports.
 * Then, for pgcopydb 0.10, which applies the changes of a source WAL segment only once it has received a change
 * from the next segment: pg_switch_wal() and one more row (a "nudge", not waited for) in the new segment.
 */
async function writeMarker(
  source: pg.Client,
  markers: { next: number },
  note: string,
): Promise<{ id: number; lsn: bigint }> {
  const id = markers.next;
  markers.next += 2;
  await source.query(`INSERT INTO ${MARKER_TABLE} (id, note) VALUES ($1, $2)`, [id, note]);
  const lsn = await readSourceLsn(source);
  await source.query('SELECT pg_switch_wal()');
  await source.query(`INSERT INTO ${MARKER_TABLE} (id, note) VALUES ($1, $2)`, [id + 1, `nudge after ${id}`]);
  return { id, lsn };
}

async function isMarkerVisible(target: pg.Client, id: number): Promise<boolean> {
  try {
    const { rowCount } = await target.query(`SELECT 1 FROM ${MARKER_TABLE} WHERE id = $1`, [id]);
    return Boolean(rowCount);
  } catch (error) {
    // The table is not on the target yet (the tool is still creating the schema).
    if ((error as { code?: string }).code === '42P01') return false;
    throw error;
  }
}

/**
 * Seconds until the marker row is on the target. Checks the tool every second: it must be alive, and its
 * applied position must move at least once every stallMs.
 */
async function waitForMarker(
  target: pg.Client,
  peer: ReplayPeer,
  markerId: number,
  options: { timeoutMs: number; stallMs: number; onSecond: () => Promise<void> },
): Promise<number> {
  const started = performance.now();
  let lastCheckMs = started;
  let lastProgressMs = started;
  let lastApplied: bigint | undefined;
  for (;;) {
    throwIfInterrupted();
    if (await isMarkerVisible(target, markerId)) return (performance.now() - started) / 1000;
    const now = performance.now();
    if (now - lastCheckMs >= 1000) {
      lastCheckMs = now;
      try {
        await peer.checkHealth();
      } catch (error) {
        throw new ToolFailure((error as Error).message);
      }
      await options.onSecond();
      const applied = await peer.readApplied(target);
      if (applied !== lastApplied) {
        lastApplied = applied;
        lastProgressMs = now;
      }
      const position = `applied position ${lastApplied === undefined ? 'none' : formatLsn(lastApplied)}`;
      if (now - lastProgressMs > options.stallMs)
        throw new ToolFailure(
          `stuck: marker ${markerId} not on the target and the ${position} has not moved for ${Math.round(options.stallMs / 1000)} s`,
        );
      if (now - started > options.timeoutMs)
        throw new ToolFailure(
          `marker ${markerId} not on the target after ${Math.round(options.timeoutMs / 1000)} s (${position})`,
        );
    }
    await sleep(MARKER_POLL_MS);
  }
}

/** The sha256 of dist/cli.js and the git state of the work tree, so a result can be tied to a build. */
async function readBuild(repoRoot: string, distCli: string): Promise<ReplayReport['build']> {
  const cliSha256 = existsSync(distCli)
    ? createHash('sha256')
        .update(await readFile(distCli))
        .digest('hex')
    : undefined;
  const git = async (args: string[]) => {
    const outcome = await runCommand({ file: 'git', args, cwd: repoRoot, timeoutMs: 10_000 }).catch(
      () => undefined,
    );
    return outcome && isSuccess(outcome) ? outcome.stdoutTail : undefined;
  };
  const head = (await git(['rev-parse', '--short', 'HEAD']))?.trim();
  // Porcelain lines are "XY path": the status letters may start with a space, so no trimming before the slice.
  const dirty = await git(['status', '--porcelain', '--untracked-files=no']);
  return {
    cliSha256,
    gitHead: head,
    gitDirty: dirty
      ?.split('\n')
      .filter((line) => line.length > 3)
      .map((line) => line.slice(3)),
  };
}

function writeReport(
  report: ReplayReport,
  resultsDir: string,
  startedAt: Date,
): Promise<{ jsonPath: string; markdownPath: string }> {
  return writeResults('replay', report, renderReplayMarkdown(report), resultsDir, startedAt);
}
