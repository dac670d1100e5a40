// The copy benchmark: one dataset on a fresh source cluster, then rounds in which each tool copies it into a
// target cluster of its own with the same job count, in a rotating order; every copy is checked (row counts,
// indexes, constraints) and the source is cleaned of slots and publications before the next run.

import { chmod, mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  findPgBinDir,
  type LocalCluster,
  startLocalCluster,
} from '../src/adapters/postgres/local-cluster.js';
import {
  BENCH_DATABASE,
  createCopyDataset,
  type DatabaseInventory,
  diffInventories,
  readDatabaseInventory,
} from './copy-dataset.js';
import { copyPeers } from './copy-peers.js';
import {
  buildRoundOrder,
  type CopyReport,
  type CopyTool,
  computeCopyResults,
  type LoadAverages,
  type Machine,
  renderCopyMarkdown,
  TOOL_LABELS,
  type ToolRun,
} from './copy-report.js';
import { ensureDebianPackages } from './ensure-debian-packages.js';
import { isInterrupted, onInterrupt, throwIfInterrupted } from './interrupts.js';
import { findOnPath, hasGnuTime, runCommand } from './run-command.js';
import { withPgClient } from './with-pg-client.js';
import { writeResults } from './write-results';

export interface CopyBenchmarkOptions {
  scale: number;
  jobs: number;
  /** Rounds: every tool runs once per round, each round in a rotated order. */
  repeat: number;
  tools: CopyTool[];
  /** Parent folder for clusters, dumps and tool state (default: <os tmp>/plm-bench). */
  tmpDir?: string;
  repoRoot: string;
  resultsDir: string;
  log: (line: string) => void;
}

export interface CopyBenchmarkOutcome {
  report: CopyReport;
  jsonPath: string;
  markdownPath: string;
}

/** Rough peak disk use per scale unit: source + one target (data and WAL) + a compressed dump. */
const DISK_BYTES_PER_SCALE = 100 * 1024 * 1024;
const DISK_BYTES_BASE = 1024 * 1024 * 1024;

/**
 * Bulk-load settings for a 2-core, 24 GB machine, used for the source and every target so no tool gets a
 * better server. fsync/full_page_writes/synchronous_commit stay as local-cluster sets them (off).
 */
export function buildClusterSettings(jobs: number): Record<string, string | number> {
  return {
    shared_buffers: "'1GB'",
    maintenance_work_mem: "'512MB'",
    work_mem: "'64MB'",
    max_wal_size: "'8GB'",
    checkpoint_timeout: "'30min'",
    // No autovacuum run lands in one tool's timing and not another's; the source is static anyway.
    autovacuum: 'off',
    // Native replication: one apply worker plus `jobs` table sync workers, the same job count as the others.
    max_sync_workers_per_subscription: jobs,
    max_logical_replication_workers: jobs + 2,
    max_worker_processes: Math.max(8, jobs + 6),
  };
}

export async function runCopyBenchmark(options: CopyBenchmarkOptions): Promise<CopyBenchmarkOutcome> {
  const { log } = options;
  const startedAt = new Date();
  const loadAtStart = readLoadAverages();
  const binDir = await findPgBinDir(process.env);
  if (!binDir) {
    throw new Error(
      'No PostgreSQL server binaries found: set PG_BINDIR or install postgresql (apt-get install postgresql).',
    );
  }
  // GNU time (Debian package `time`) measures peak RSS; pgcopydb is a peer. Install what is missing.
  const packages = await ensureDebianPackages(
    [
      { name: 'time', isPresent: hasGnuTime },
      ...(options.tools.includes('pgcopydb')
        ? [{ name: 'pgcopydb', isPresent: () => findOnPath('pgcopydb') !== undefined }]
        : []),
    ],
    log,
  );
  for (const pkg of packages.filter((p) => p.status !== 'present')) {
    log(`package ${pkg.name}: ${pkg.status}${pkg.detail ? ` (${pkg.detail})` : ''}`);
  }

  const parentDir = options.tmpDir ?? join(tmpdir(), 'plm-bench');
  await mkdir(parentDir, { recursive: true });
  await checkFreeDisk(parentDir, options.scale);
  const runDir = await mkdtemp(join(parentDir, 'copy-'));
  // mkdtemp makes it 0700; the servers run as `postgres` and must reach their data directories inside.
  await chmod(runDir, 0o755);
  const settings = buildClusterSettings(options.jobs);
  const timeoutMs = (600 + options.scale * 36) * 1000;
  const removeRunDir = onInterrupt(() => rm(runDir, { recursive: true, force: true }));
  try {
    const source = await startCluster('source', binDir, settings, runDir);
    try {
      log(`source cluster on port ${source.cluster.port}; generating the dataset at scale ${options.scale}`);
      const generateStarted = performance.now();
      await createCopyDataset(source.cluster, options.scale);
      const generateSeconds = (performance.now() - generateStarted) / 1000;
      const inventory = await readDatabaseInventory(source.cluster.uri(BENCH_DATABASE));
      const totalRows = inventory.tables.reduce((sum, table) => sum + table.rows, 0);
      log(
        `dataset: ${totalRows.toLocaleString('en-US')} rows, ${(inventory.databaseBytes / 1e6).toFixed(0)} MB ` +
          `in ${generateSeconds.toFixed(0)} s`,
      );

      // Interleaved rounds rather than N runs of one tool after the other: a stretch of heavy load from
      // other work on the machine then slows one run of several tools, not every run of one tool.
      const rounds = Array.from({ length: options.repeat }, (_, round) =>
        buildRoundOrder(options.tools, round),
      );
      const runs: ToolRun[] = [];
      for (const [index, order] of rounds.entries()) {
        const round = index + 1;
        log(`round ${round}/${rounds.length}: ${order.join(', ')}`);
        for (const [place, tool] of order.entries()) {
          throwIfInterrupted();
          runs.push(
            await runTool(
              { tool, round, position: place + 1 },
              { ...options, binDir, settings, runDir, timeoutMs },
              source.cluster,
              inventory,
            ),
          );
        }
      }

      const postgresVersion = await runCommand({
        file: join(binDir, 'postgres'),
        args: ['--version'],
        timeoutMs: 10_000,
      });
      const pgcopydbVersion = runs
        .filter((run) => run.tool === 'pgcopydb')
        .map((run) => run.notes[0])
        .find((note) => note?.startsWith('pgcopydb version'));
      const dataset = { ...inventory, totalRows, generateSeconds };
      const results = computeCopyResults(runs, options.tools, dataset);
      const report: CopyReport = {
        benchmark: 'copy',
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        machine: describeMachine(postgresVersion.stdoutTail.trim(), pgcopydbVersion, loadAtStart),
        options: { scale: options.scale, jobs: options.jobs, repeat: options.repeat, tools: options.tools },
        rounds,
        clusterSettings: settings,
        dataset,
        summary: results.summary,
        runs: results.runs,
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

interface RunToolContext extends CopyBenchmarkOptions {
  binDir: string;
  settings: Record<string, string | number>;
  runDir: string;
  timeoutMs: number;
}

async function runTool(
  place: Pick<ToolRun, 'tool' | 'round' | 'position'>,
  context: RunToolContext,
  source: LocalCluster,
  inventory: DatabaseInventory,
): Promise<ToolRun> {
  const { tool, round } = place;
  const log = (line: string) => context.log(`round ${round} ${line}`);
  log(`${tool}: ${TOOL_LABELS[tool]}: starting a fresh target cluster`);
  const target = await startCluster(
    `target-r${round}-${tool}`,
    context.binDir,
    context.settings,
    context.runDir,
  );
  const workDir = join(context.runDir, `work-r${round}-${tool}`);
  let loadAverageAtStart: number | undefined;
  try {
    await mkdir(workDir, { recursive: true });
    await withPgClient(target.cluster.uri(), async (client) => {
      await client.query(`CREATE DATABASE ${BENCH_DATABASE}`);
      await client.query('CHECKPOINT');
    });
    // Start every tool from the same server state: nothing dirty left from the previous tool.
    await withPgClient(source.uri(), (client) => client.query('CHECKPOINT'));
    loadAverageAtStart = readLoadAverages()[0];
    log(`${tool}: running with ${context.jobs} jobs (load average ${loadAverageAtStart.toFixed(2)})`);
    const run = await copyPeers[tool]({
      source,
      target: target.cluster,
      jobs: context.jobs,
      workDir,
      repoRoot: context.repoRoot,
      binDir: context.binDir,
      timeoutMs: context.timeoutMs,
      log,
    });
    const result: ToolRun = { ...place, loadAverageAtStart, ...run };
    if (run.status === 'ok') {
      const copied = await readDatabaseInventory(target.cluster.uri(BENCH_DATABASE));
      const mismatches = diffInventories(inventory, copied);
      if (mismatches.length > 0) {
        result.status = 'failed';
        result.error = `target differs from source: ${mismatches.join('; ')}`;
      }
    }
    const leftovers = await dropLeftoversOnSource(source);
    if (leftovers.dropped.length > 0)
      result.notes.push(`Left on the source and dropped by the benchmark: ${leftovers.dropped.join(', ')}.`);
    if (leftovers.remaining.length > 0) {
      // The next runs would share the source with a slot holding WAL back: say so on the run that left it.
      result.status = 'failed';
      result.error =
        `could not drop from the source: ${leftovers.remaining.join(', ')}; later runs may be skewed` +
        (result.error ? `\n${result.error}` : '');
    }
    log(
      `${tool}: ${result.status}` +
        (result.seconds !== undefined ? ` in ${result.seconds.toFixed(1)} s` : '') +
        (result.error ? `: ${result.error.split('\n')[0]}` : ''),
    );
    return result;
  } catch (error) {
    if (isInterrupted()) throw error;
    const message = (error as Error).message;
    log(`${tool}: failed: ${message.split('\n')[0]}`);
    // The next round's runs must not find this run's slot or publications on the source.
    const leftovers = await dropLeftoversOnSource(source).catch((dropError: Error) => ({
      dropped: [],
      remaining: [`unknown (${dropError.message})`],
    }));
    const notes =
      leftovers.dropped.length > 0
        ? [`Left on the source and dropped by the benchmark: ${leftovers.dropped.join(', ')}.`]
        : [];
    const stuck =
      leftovers.remaining.length > 0
        ? `\ncould not drop from the source: ${leftovers.remaining.join(', ')}; later runs may be skewed`
        : '';
    return {
      ...place,
      loadAverageAtStart,
      status: 'failed',
      parts: [],
      commands: [],
      notes,
      error: `${message}${stuck}`,
    };
  } finally {
    await target.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Starts a cluster that an interrupt stops too; refuses to leave one running once interrupted. */
export async function startCluster(
  name: string,
  binDir: string,
  settings: Record<string, string | number>,
  parentDir: string,
): Promise<{ cluster: LocalCluster; stop: () => Promise<void> }> {
  throwIfInterrupted();
  const cluster = await startLocalCluster({ name, binDir, settings, parentDir });
  const unregister = onInterrupt(() => cluster.stop());
  const stop = async () => {
    unregister();
    await cluster.stop();
  };
  if (isInterrupted()) {
    await stop();
    throwIfInterrupted();
  }
  return { cluster, stop };
}

export async function checkFreeDisk(dir: string, scale: number): Promise<void> {
  const stats = await statfs(dir);
  const freeBytes = stats.bavail * stats.bsize;
  const neededBytes = DISK_BYTES_BASE + scale * DISK_BYTES_PER_SCALE;
  if (freeBytes < neededBytes) {
    const gb = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
    throw new Error(
      `Only ${gb(freeBytes)} free under ${dir}; scale ${scale} needs about ${gb(neededBytes)}. ` +
        'Free some space, pass --tmp-dir on a larger disk, or lower --scale.',
    );
  }
}

/** How long a slot may stay active after its tool exited: the walsender notices the closed socket and exits. */
const SLOT_RELEASE_TIMEOUT_MS = 30_000;
const SLOT_RELEASE_POLL_MS = 200;

/**
 * Slots and publications a tool left on the source would hold WAL and skew the next run (and ours would
 * find its own slot from the previous round): drop them, and report what could not be dropped.
 */
export async function dropLeftoversOnSource(
  source: LocalCluster,
): Promise<{ dropped: string[]; remaining: string[] }> {
  return withPgClient(source.uri(BENCH_DATABASE), async (client) => {
    // A slot stays active until its walsender has exited, which can lag the tool's own exit a little;
    // pg_drop_replication_slot refuses an active slot, so wait for it rather than skip it.
    const deadline = performance.now() + SLOT_RELEASE_TIMEOUT_MS;
    for (;;) {
      const { rowCount } = await client.query('SELECT 1 FROM pg_replication_slots WHERE active');
      if (!rowCount || performance.now() > deadline) break;
      await sleep(SLOT_RELEASE_POLL_MS);
    }
    const dropped: string[] = [];
    const { rows: slots } = await client.query<{ slot_name: string }>(
      'SELECT slot_name FROM pg_replication_slots WHERE NOT active ORDER BY 1',
    );
    for (const { slot_name } of slots) {
      await client.query('SELECT pg_drop_replication_slot($1)', [slot_name]);
      dropped.push(`slot ${slot_name}`);
    }
    const { rows: publications } = await client.query<{ name: string }>(
      'SELECT quote_ident(pubname) AS name FROM pg_publication ORDER BY 1',
    );
    for (const { name } of publications) {
      await client.query(`DROP PUBLICATION ${name}`);
      dropped.push(`publication ${name}`);
    }
    const { rows: remaining } = await client.query<{ what: string }>(
      `SELECT 'slot ' || slot_name || ' (active)' AS what FROM pg_replication_slots
       UNION ALL SELECT 'publication ' || pubname FROM pg_publication ORDER BY 1`,
    );
    return { dropped, remaining: remaining.map((row) => row.what) };
  });
}

/** The machine now: CPUs, memory, versions, and the load since `loadAtStart`. */
export function describeMachine(
  postgres: string,
  pgcopydb: string | undefined,
  loadAtStart: LoadAverages,
): Machine {
  return {
    cpus: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `Linux ${release()}`,
    node: process.version,
    postgres,
    pgcopydb,
    loadAverages: { atStart: loadAtStart, atEnd: readLoadAverages() },
  };
}

export function readLoadAverages(): LoadAverages {
  const [one = 0, five = 0, fifteen = 0] = loadavg();
  return [one, five, fifteen];
}

function writeReport(
  report: CopyReport,
  resultsDir: string,
  startedAt: Date,
): Promise<{ jsonPath: string; markdownPath: string }> {
  return writeResults('copy', report, renderCopyMarkdown(report), resultsDir, startedAt);
}
