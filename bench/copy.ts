// The copy benchmark: one dataset on a fresh source cluster, then each tool copies it into a target cluster
// of its own with the same job count; row counts and index/constraint counts are checked after every tool.
import { chmod, mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
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
  type CopyReport,
  type CopyTool,
  computeToolResults,
  renderCopyMarkdown,
  TOOL_LABELS,
  type ToolRun,
} from './copy-report.js';
import { ensureDebianPackages } from './ensure-debian-packages.js';
import { isInterrupted, onInterrupt, throwIfInterrupted } from './interrupts.js';
import { findOnPath, hasGnuTime, runCommand } from './run-command.js';
import { withPgClient } from './with-pg-client.js';

export interface CopyBenchmarkOptions {
  scale: number;
  jobs: number;
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

      const runs: ToolRun[] = [];
      for (const tool of options.tools) {
        throwIfInterrupted();
        runs.push(
          await runTool(tool, { ...options, binDir, settings, runDir, timeoutMs }, source.cluster, inventory),
        );
      }

      const postgresVersion = await runCommand({
        file: join(binDir, 'postgres'),
        args: ['--version'],
        timeoutMs: 10_000,
      });
      const pgcopydbNote = runs.find((run) => run.tool === 'pgcopydb')?.notes[0];
      const report: CopyReport = {
        benchmark: 'copy',
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        machine: {
          cpus: cpus().length,
          memoryGiB: Math.round(totalmem() / 2 ** 30),
          os: `Linux ${release()}`,
          node: process.version,
          postgres: postgresVersion.stdoutTail.trim(),
          pgcopydb: pgcopydbNote?.startsWith('pgcopydb version') ? pgcopydbNote : undefined,
        },
        options: { scale: options.scale, jobs: options.jobs, tools: options.tools },
        clusterSettings: settings,
        dataset: { ...inventory, totalRows, generateSeconds },
        results: [],
      };
      report.results = computeToolResults(runs, report.dataset);
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
  tool: CopyTool,
  context: RunToolContext,
  source: LocalCluster,
  inventory: DatabaseInventory,
): Promise<ToolRun> {
  const { log } = context;
  log(`${tool}: ${TOOL_LABELS[tool]}: starting a fresh target cluster`);
  const target = await startCluster(`target-${tool}`, context.binDir, context.settings, context.runDir);
  const workDir = join(context.runDir, `work-${tool}`);
  try {
    await mkdir(workDir, { recursive: true });
    await withPgClient(target.cluster.uri(), async (client) => {
      await client.query(`CREATE DATABASE ${BENCH_DATABASE}`);
      await client.query('CHECKPOINT');
    });
    // Start every tool from the same server state: nothing dirty left from the previous tool.
    await withPgClient(source.uri(), (client) => client.query('CHECKPOINT'));
    log(`${tool}: running with ${context.jobs} jobs`);
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
    const result: ToolRun = { tool, ...run };
    if (run.status === 'ok') {
      const copied = await readDatabaseInventory(target.cluster.uri(BENCH_DATABASE));
      const mismatches = diffInventories(inventory, copied);
      if (mismatches.length > 0) {
        result.status = 'failed';
        result.error = `target differs from source: ${mismatches.join('; ')}`;
      }
    }
    const leftovers = await dropLeftoversOnSource(source);
    if (leftovers.length > 0)
      result.notes.push(`Left on the source and dropped by the benchmark: ${leftovers.join(', ')}.`);
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
    return { tool, status: 'failed', parts: [], commands: [], notes: [], error: message };
  } finally {
    await target.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Starts a cluster that an interrupt stops too; refuses to leave one running once interrupted. */
async function startCluster(
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

async function checkFreeDisk(dir: string, scale: number): Promise<void> {
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

/** Slots and publications a tool left on the source would hold WAL and skew the next tool: drop them. */
async function dropLeftoversOnSource(source: LocalCluster): Promise<string[]> {
  return withPgClient(source.uri(BENCH_DATABASE), async (client) => {
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
    return dropped;
  });
}

async function writeReport(
  report: CopyReport,
  resultsDir: string,
  startedAt: Date,
): Promise<{ jsonPath: string; markdownPath: string }> {
  await mkdir(resultsDir, { recursive: true });
  // ISO 8601 basic format (20250101T120000Z): no colons, so the names are safe on every file system.
  const stamp = startedAt
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const jsonPath = join(resultsDir, `copy-${stamp}.json`);
  const markdownPath = join(resultsDir, `copy-${stamp}.md`);
  await writeFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(markdownPath, renderCopyMarkdown(report));
  return { jsonPath, markdownPath };
}
