// How each tool in the copy benchmark is run: pg-live-migrate, pg_dump/pg_restore, native logical
// replication and pgcopydb. Each gets a fresh empty target database and returns its timings; the caller
// checks the copied data.
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { LocalCluster } from '../src/adapters/postgres/local-cluster.js';
import { BENCH_DATABASE } from './copy-dataset.js';
import type { CopyTool, ToolRun } from './copy-report.js';
import { throwIfInterrupted } from './interrupts.js';
import {
  type CommandSpec,
  describeCommand,
  describeFailure,
  findOnPath,
  isSuccess,
  runCommand,
} from './run-command.js';
import { withPgClient } from './with-pg-client.js';

export interface PeerContext {
  source: LocalCluster;
  /** A cluster of its own for this tool, with an empty `bench` database. */
  target: LocalCluster;
  jobs: number;
  /** An empty directory this tool may use for dumps and state. */
  workDir: string;
  repoRoot: string;
  binDir: string;
  timeoutMs: number;
  log: (line: string) => void;
}

/** What a peer reports; the harness adds which tool, round and place it was. */
export type PeerRun = Omit<ToolRun, 'tool' | 'round' | 'position' | 'loadAverageAtStart'>;

const RSS_NOTE =
  'Peak RSS is GNU time %M: the largest single process of the tree (the tool or one of its children), not the sum.';

export const copyPeers: Record<CopyTool, (context: PeerContext) => Promise<PeerRun>> = {
  ours: runOurs,
  pgdump: runPgDumpRestore,
  native: runNativeReplication,
  pgcopydb: runPgcopydb,
};

async function runOurs(context: PeerContext): Promise<PeerRun> {
  const jobs = String(context.jobs);
  const args = [
    'dist/cli.js',
    'copy',
    '--source',
    context.source.uri(BENCH_DATABASE),
    '--target',
    context.target.uri(BENCH_DATABASE),
    '--table-jobs',
    jobs,
    '--index-jobs',
    jobs,
    '--dir',
    context.workDir,
  ];
  const commands = [describeCommand({ file: 'node', args })];
  const notes = [`${RSS_NOTE} For ours that is node or the largest child it spawned (pg_dump, pg_restore).`];
  if (!existsSync(join(context.repoRoot, 'dist', 'cli.js'))) {
    return {
      status: 'failed',
      parts: [],
      commands,
      notes,
      error: 'dist/cli.js not found: run `npm run build`',
    };
  }
  const outcome = await runCommand({
    file: process.execPath,
    args,
    cwd: context.repoRoot,
    env: { ...process.env, PG_BINDIR: context.binDir },
    timeoutMs: context.timeoutMs,
    measureRss: true,
  });
  const parts = [{ name: 'copy', seconds: outcome.seconds }];
  if (!isSuccess(outcome)) {
    return { status: 'failed', parts, commands, notes, error: describeFailure('dist/cli.js copy', outcome) };
  }
  return { status: 'ok', seconds: outcome.seconds, parts, peakRssKiB: outcome.peakRssKiB, commands, notes };
}

async function runPgDumpRestore(context: PeerContext): Promise<PeerRun> {
  const jobs = String(context.jobs);
  const dumpDir = join(context.workDir, 'dump');
  const steps: { name: string; spec: CommandSpec }[] = [
    {
      name: 'pg_dump',
      spec: {
        file: join(context.binDir, 'pg_dump'),
        args: ['-Fd', '-j', jobs, '-f', dumpDir, '-d', context.source.uri(BENCH_DATABASE)],
        timeoutMs: context.timeoutMs,
        measureRss: true,
      },
    },
    {
      name: 'pg_restore',
      spec: {
        file: join(context.binDir, 'pg_restore'),
        args: ['-j', jobs, '--exit-on-error', '-d', context.target.uri(BENCH_DATABASE), dumpDir],
        timeoutMs: context.timeoutMs,
        measureRss: true,
      },
    },
  ];
  const commands = steps.map((step) => describeCommand(step.spec));
  const notes = [
    'seconds = pg_dump + pg_restore, run one after the other (the dump goes through local disk).',
    'The directory format compresses table data with gzip at its default level, on the client.',
    RSS_NOTE,
  ];
  const parts: PeerRun['parts'] = [];
  let peakRssKiB: number | undefined;
  for (const step of steps) {
    throwIfInterrupted();
    const outcome = await runCommand(step.spec);
    parts.push({ name: step.name, seconds: outcome.seconds });
    if (outcome.peakRssKiB !== undefined) peakRssKiB = Math.max(peakRssKiB ?? 0, outcome.peakRssKiB);
    if (!isSuccess(outcome)) {
      return { status: 'failed', parts, commands, notes, error: describeFailure(step.name, outcome) };
    }
  }
  const dumpBytes = await directoryBytes(dumpDir);
  notes.push(`Dump directory: ${(dumpBytes / 1_000_000).toFixed(1)} MB.`);
  const seconds = parts.reduce((sum, part) => sum + part.seconds, 0);
  return { status: 'ok', seconds, parts, peakRssKiB, commands, notes };
}

export const PUBLICATION = 'plm_bench_pub';
export const SUBSCRIPTION = 'plm_bench_sub';
const POLL_MS = 200;

async function runNativeReplication(context: PeerContext): Promise<PeerRun> {
  const sourceUri = context.source.uri(BENCH_DATABASE);
  const targetUri = context.target.uri(BENCH_DATABASE);
  const connection = `host=127.0.0.1 port=${context.source.port} dbname=${BENCH_DATABASE} user=postgres`;
  const commands = [
    `pg_dump --schema-only -d ${sourceUri} | psql -v ON_ERROR_STOP=1 -q -d ${targetUri}`,
    `source: CREATE PUBLICATION ${PUBLICATION} FOR ALL TABLES`,
    `target: CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${connection}' PUBLICATION ${PUBLICATION} WITH (copy_data = true)`,
    `target: poll pg_subscription_rel every ${POLL_MS} ms until every srsubstate = 'r'`,
    `target: DROP SUBSCRIPTION ${SUBSCRIPTION} (drops its slot on the source); source: DROP PUBLICATION ${PUBLICATION}`,
  ];
  const notes = [
    'seconds = schema (pg_dump --schema-only | psql, timed as its own part) + sync (CREATE SUBSCRIPTION until ' +
      "every table is 'r'). The publication is created before the clock starts.",
    `Indexes and constraints exist on the target during the sync (native replication needs the schema first), so every copied row also updates the indexes; max_sync_workers_per_subscription = ${context.jobs}.`,
    'Peak RSS: not measured; the copy runs inside the servers (walsenders on the source, table sync workers on the target), with no client process.',
  ];
  const parts: PeerRun['parts'] = [];
  const schemaStarted = performance.now();
  try {
    const { stdout: schema } = await context.source.run('pg_dump', ['--schema-only', '-d', sourceUri]);
    await context.target.run('psql', ['-v', 'ON_ERROR_STOP=1', '-q', '-d', targetUri], { input: schema });
  } catch (error) {
    return { status: 'failed', parts, commands, notes, error: `schema: ${(error as Error).message}` };
  }
  parts.push({ name: 'schema', seconds: (performance.now() - schemaStarted) / 1000 });
  await withPgClient(sourceUri, (client) => client.query(`CREATE PUBLICATION ${PUBLICATION} FOR ALL TABLES`));
  try {
    const syncStarted = performance.now();
    await withPgClient(targetUri, async (client) => {
      await client.query(
        `CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${connection}' PUBLICATION ${PUBLICATION} WITH (copy_data = true)`,
      );
      await waitForSubscriptionReady(client, context.timeoutMs);
    });
    parts.push({ name: 'sync', seconds: (performance.now() - syncStarted) / 1000 });
  } catch (error) {
    const log = await readServerLogErrors(context.target);
    return {
      status: 'failed',
      parts,
      commands,
      notes,
      error: `sync: ${(error as Error).message}${log ? `\ntarget server log:\n${log}` : ''}`,
    };
  } finally {
    await dropSubscription(context);
  }
  const seconds = parts.reduce((sum, part) => sum + part.seconds, 0);
  return { status: 'ok', seconds, parts, commands, notes };
}

/** Polls until every table of the subscription is ready; fails fast when a sync or apply worker errors. */
export async function waitForSubscriptionReady(client: pg.Client, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    throwIfInterrupted();
    const { rows } = await client.query<{ pending: string; total: string; errors: string | null }>(
      `SELECT count(*) FILTER (WHERE r.srsubstate <> 'r') AS pending, count(*) AS total,
              (SELECT st.sync_error_count + st.apply_error_count FROM pg_stat_subscription_stats st
               WHERE st.subname = $1) AS errors
       FROM pg_subscription s JOIN pg_subscription_rel r ON r.srsubid = s.oid
       WHERE s.subname = $1`,
      [SUBSCRIPTION],
    );
    const row = rows[0];
    if (Number(row?.errors ?? 0) > 0)
      throw new Error(`subscription workers reported ${row?.errors} error(s)`);
    if (row && Number(row.total) > 0 && Number(row.pending) === 0) return;
    if (performance.now() > deadline) throw new Error(`not ready after ${timeoutMs / 1000} s`);
    await sleep(POLL_MS);
  }
}

/** Drops the subscription (and with it the slot on the source), then the publication; safe to repeat. */
export async function dropSubscription(
  context: Pick<PeerContext, 'source' | 'target' | 'log'>,
): Promise<void> {
  await withPgClient(context.target.uri(BENCH_DATABASE), async (client) => {
    const { rowCount } = await client.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [
      SUBSCRIPTION,
    ]);
    if (!rowCount) return;
    try {
      await client.query(`DROP SUBSCRIPTION ${SUBSCRIPTION}`);
    } catch {
      // The remote slot could not be dropped: detach it here and drop it on the source below.
      await client.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`);
      await client.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} SET (slot_name = NONE)`);
      await client.query(`DROP SUBSCRIPTION ${SUBSCRIPTION}`);
    }
  }).catch((error: Error) => context.log(`native: could not drop the subscription: ${error.message}`));
  await withPgClient(context.source.uri(BENCH_DATABASE), (client) =>
    client.query(`DROP PUBLICATION IF EXISTS ${PUBLICATION}`),
  ).catch((error: Error) => context.log(`native: could not drop the publication: ${error.message}`));
}

export async function readServerLogErrors(cluster: LocalCluster): Promise<string> {
  const text = await readFile(join(cluster.dataDir, 'server.log'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => /ERROR|FATAL/.test(line))
    .slice(-10)
    .join('\n');
}

async function runPgcopydb(context: PeerContext): Promise<PeerRun> {
  const pgcopydb = findOnPath('pgcopydb');
  const jobs = String(context.jobs);
  const spec: CommandSpec = {
    file: pgcopydb ?? 'pgcopydb',
    args: [
      'clone',
      '--source',
      context.source.uri(BENCH_DATABASE),
      '--target',
      context.target.uri(BENCH_DATABASE),
      '--table-jobs',
      jobs,
      '--index-jobs',
      jobs,
      '--dir',
      join(context.workDir, 'pgcopydb'),
    ],
    // Its pg_dump and pg_restore must be the same major version as the servers: put ours first on PATH.
    env: { ...process.env, PATH: `${context.binDir}:${process.env.PATH ?? ''}` },
    timeoutMs: context.timeoutMs,
    measureRss: true,
  };
  const commands = [describeCommand({ ...spec, file: 'pgcopydb' })];
  const notes = [
    'pgcopydb runs VACUUM ANALYZE on every target table after its copy; that time is part of its seconds.',
    'Run as a plain clone without --split-tables-larger-than (its default): one COPY per table, however large.',
    RSS_NOTE,
  ];
  if (!pgcopydb) {
    return {
      status: 'skipped',
      parts: [],
      commands,
      notes: [],
      error: 'pgcopydb is not installed and apt-get could not install it (Debian package `pgcopydb`)',
    };
  }
  const version = await runCommand({ file: pgcopydb, args: ['--version'], timeoutMs: 10_000 });
  const versionLine = version.stdoutTail.split('\n')[0]?.trim();
  if (versionLine) notes.unshift(versionLine);
  const outcome = await runCommand(spec);
  const parts = [{ name: 'clone', seconds: outcome.seconds }];
  if (!isSuccess(outcome)) {
    return { status: 'failed', parts, commands, notes, error: describeFailure('pgcopydb clone', outcome) };
  }
  return { status: 'ok', seconds: outcome.seconds, parts, peakRssKiB: outcome.peakRssKiB, commands, notes };
}

async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    total += entry.isDirectory() ? await directoryBytes(path) : (await stat(path)).size;
  }
  return total;
}
