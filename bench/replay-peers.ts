// How each tool of the replay benchmark is set up, stopped, resumed, read and cleaned up: pg-live-migrate
// (`migrate`, then `replay --resume`), native logical replication (a subscription on the target) and
// `pgcopydb clone --follow` / `pgcopydb follow --resume`. The harness drives all three through one interface.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { LocalCluster } from '../src/adapters/postgres/local-cluster.js';
import { type BackgroundProcess, startBackgroundProcess } from './background-process.js';
import {
  dropSubscription,
  PUBLICATION,
  readServerLogErrors,
  SUBSCRIPTION,
  waitForSubscriptionReady,
} from './copy-peers.js';
import { BENCH_DATABASE } from './replay-dataset.js';
import { parseLsn } from './replay-lag.js';
import { describeCommand, describeFailure, findOnPath, isSuccess, runCommand } from './run-command.js';
import { withPgClient } from './with-pg-client.js';

export const REPLAY_TOOLS = ['ours', 'native', 'pgcopydb'] as const;
export type ReplayTool = (typeof REPLAY_TOOLS)[number];

export const REPLAY_TOOL_LABELS: Record<ReplayTool, string> = {
  ours: 'pg-live-migrate migrate / replay --resume',
  native: 'native logical replication (subscription)',
  pgcopydb: 'pgcopydb clone --follow / follow --resume',
};

export interface ReplayPeerContext {
  source: LocalCluster;
  /** A cluster of its own for this tool, with an empty `bench` database. */
  target: LocalCluster;
  jobs: number;
  /** An empty directory this tool may use for its state and logs. */
  workDir: string;
  /** The copy of dist/cli.js taken when the benchmark started. */
  cliPath: string;
  binDir: string;
  timeoutMs: number;
  log: (line: string) => void;
}

export interface ReplayPeer {
  readonly commands: string[];
  readonly notes: string[];
  /** Where the applied position comes from, for the report. */
  readonly appliedPosition: string;
  /** The tool's replication slot on the source. */
  readonly slotName: string;
  /** What readMemoryKiB measures; undefined when the tool has no client process. */
  readonly memoryMetric: string | undefined;
  /** Creates the target copy and starts the replay; returns once it runs (not once it has caught up). */
  start(): Promise<void>;
  /** Stops applying changes; the slot stays, so a resume continues where this stopped. */
  stop(): Promise<void>;
  resume(): Promise<void>;
  /** The source position up to which changes are committed on the target; undefined while there is none. */
  readApplied(target: pg.Client): Promise<bigint | undefined>;
  /** Throws, with the tool's own words, when it has died or reports errors. */
  checkHealth(): Promise<void>;
  /** The tool's memory now (see memoryMetric), KiB. */
  readMemoryKiB(): Promise<number | undefined>;
  /** CPU seconds its current process (group) has used since it started; undefined without a client process. */
  readCpuSeconds(): Promise<number | undefined>;
  /** The end of the tool's output (or the server's errors), for a failure report. */
  describeOutput(): Promise<string>;
  /** Stops the tool and removes what it made on the source (slot, publication, sentinel). */
  cleanup(): Promise<void>;
}

export function createReplayPeer(tool: ReplayTool, context: ReplayPeerContext): ReplayPeer {
  switch (tool) {
    case 'ours':
      return createOurs(context);
    case 'native':
      return createNative(context);
    case 'pgcopydb':
      return createPgcopydb(context);
  }
}

const STOP_TIMEOUT_MS = 60_000;
const OUTPUT_LINES = 25;

const lastLines = (text: string, count = OUTPUT_LINES) => text.trim().split('\n').slice(-count).join('\n');

/** A tool process that ended by itself while the benchmark still needed it. */
function describeExit(name: string, process: BackgroundProcess, exit: { exitCode: number | null }): string {
  return `${name} exited with ${exit.exitCode ?? 'a signal'}:\n${lastLines(process.tail())}`;
}

/** Reads a replication origin's remote_lsn on the target: what the tool committed there, per transaction. */
async function readOriginLsn(target: pg.Client, originName: string): Promise<bigint | undefined> {
  const { rows } = await target.query<{ lsn: string | null }>(
    `SELECT s.remote_lsn::text AS lsn FROM pg_replication_origin_status s
     JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = $1`,
    [originName],
  );
  const lsn = rows[0]?.lsn;
  return lsn && lsn !== '0/0' ? parseLsn(lsn) : undefined;
}

function createOurs(context: ReplayPeerContext): ReplayPeer {
  const source = context.source.uri(BENCH_DATABASE);
  const target = context.target.uri(BENCH_DATABASE);
  const dir = join(context.workDir, 'ours');
  const connection = ['--source', source, '--target', target, '--dir', dir];
  const migrateArgs = [
    context.cliPath,
    'migrate',
    ...connection,
    '--table-jobs',
    String(context.jobs),
    '--index-jobs',
    String(context.jobs),
  ];
  const replayArgs = [context.cliPath, 'replay', '--resume', ...connection];
  const cleanArgs = [context.cliPath, 'clean', '--prune', ...connection];
  const env = { ...process.env, PG_BINDIR: context.binDir };
  let current: { name: string; process: BackgroundProcess } | undefined;
  let launches = 0;
  const launch = (name: string, args: string[]) => {
    launches += 1;
    current = {
      name,
      process: startBackgroundProcess({
        file: process.execPath,
        args,
        env,
        logFile: join(context.workDir, `ours-${launches}-${name}.log`),
      }),
    };
  };
  const stopCurrent = async () => {
    if (!current) return;
    const { name, process: running } = current;
    current = undefined;
    if (!running.isRunning()) {
      const exit = await running.exited;
      throw new Error(describeExit(`node cli.js ${name}`, running, exit));
    }
    // Ctrl-C: the replay commits what it has, records its position and exits with 4 ("stopped; resume").
    const exit = await running.stop('SIGINT', 'process', STOP_TIMEOUT_MS);
    if (exit.killed || exit.exitCode !== 4 || !running.tail().includes('Replay stopped')) {
      throw new Error(
        `node cli.js ${name} did not stop cleanly on SIGINT (${exit.killed ? 'killed after 60 s' : `exit ${exit.exitCode ?? exit.signal}`}):\n${lastLines(running.tail())}`,
      );
    }
  };
  return {
    commands: [
      describeCommand({
        file: 'node',
        args: migrateArgs.map((arg) => (arg === context.cliPath ? 'dist/cli.js' : arg)),
      }),
      'stop: SIGINT to the node process (it exits with 4, "Replay stopped; resume with --resume")',
      describeCommand({
        file: 'node',
        args: replayArgs.map((arg) => (arg === context.cliPath ? 'dist/cli.js' : arg)),
      }),
      describeCommand({
        file: 'node',
        args: cleanArgs.map((arg) => (arg === context.cliPath ? 'dist/cli.js' : arg)),
      }),
    ],
    notes: [
      'dist/cli.js is copied when the benchmark starts, so every run of ours runs the same build.',
      'Lag reports at the default --lag-interval (10 s).',
    ],
    appliedPosition:
      "target: _pg_live_migrate.replay.applied_lsn (the end LSN of the last source transaction applied, written in the same target transaction as the changes; on an idle source the replay also moves it to the keepalive's WAL end)",
    slotName: 'pg_live_migrate_default',
    memoryMetric: 'VmHWM (peak RSS) of the node process, read from /proc just before it is stopped',
    start: async () => launch('migrate', migrateArgs),
    stop: stopCurrent,
    resume: async () => launch('replay', replayArgs),
    readApplied: async (client) => {
      try {
        const { rows } = await client.query<{ lsn: string }>(
          `SELECT applied_lsn::text AS lsn FROM _pg_live_migrate.replay WHERE migration_id = 'default'`,
        );
        const lsn = rows[0]?.lsn;
        return lsn && lsn !== '0/0' ? parseLsn(lsn) : undefined;
      } catch (error) {
        // Before the copy has made the control schema there is no position yet.
        if ((error as { code?: string }).code === '42P01' || (error as { code?: string }).code === '3F000')
          return undefined;
        throw error;
      }
    },
    checkHealth: async () => {
      if (current && !current.process.isRunning()) {
        const exit = await current.process.exited;
        throw new Error(describeExit(`node cli.js ${current.name}`, current.process, exit));
      }
    },
    readMemoryKiB: async () => (current ? (await current.process.readUsage()).peakRssKiB : undefined),
    readCpuSeconds: async () => (current ? (await current.process.readUsage()).groupCpuSeconds : undefined),
    describeOutput: async () => (current ? lastLines(current.process.tail()) : ''),
    cleanup: async () => {
      if (current) {
        const running = current.process;
        current = undefined;
        await running.stop('SIGINT', 'process', STOP_TIMEOUT_MS);
      }
      const outcome = await runCommand({ file: process.execPath, args: cleanArgs, env, timeoutMs: 120_000 });
      if (!isSuccess(outcome)) throw new Error(describeFailure('node cli.js clean --prune', outcome));
    },
  };
}

function createNative(context: ReplayPeerContext): ReplayPeer {
  const sourceUri = context.source.uri(BENCH_DATABASE);
  const targetUri = context.target.uri(BENCH_DATABASE);
  const connection = `host=127.0.0.1 port=${context.source.port} dbname=${BENCH_DATABASE} user=postgres`;
  const waitForWorker = async (running: boolean) => {
    const deadline = performance.now() + STOP_TIMEOUT_MS;
    await withPgClient(targetUri, async (client) => {
      for (;;) {
        const { rowCount } = await client.query(
          'SELECT 1 FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL',
          [SUBSCRIPTION],
        );
        if (Boolean(rowCount) === running) return;
        if (performance.now() > deadline)
          throw new Error(
            `the subscription's apply worker did not ${running ? 'start' : 'exit'} within 60 s`,
          );
        await sleep(100);
      }
    });
  };
  return {
    commands: [
      `pg_dump --schema-only -d <source> | psql -v ON_ERROR_STOP=1 -q -d <target>`,
      `source: CREATE PUBLICATION ${PUBLICATION} FOR ALL TABLES`,
      `target: CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '<source>' PUBLICATION ${PUBLICATION} WITH (copy_data = true), then poll pg_subscription_rel until every table is 'r'`,
      `stop: ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE (and wait for the apply worker to exit); resume: ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`,
      `cleanup: DROP SUBSCRIPTION ${SUBSCRIPTION} (drops its slot on the source); source: DROP PUBLICATION ${PUBLICATION}`,
    ],
    notes: [
      'Subscription options at their PostgreSQL 15 defaults: streaming = off (a transaction is sent once it has committed), synchronous_commit = off for the apply worker, binary = false.',
      `max_sync_workers_per_subscription = ${context.jobs} for the initial sync.`,
      'Memory: not measured; the replay runs inside the servers (a walsender on the source, the apply worker on the target).',
    ],
    appliedPosition:
      "target: pg_replication_origin_status.remote_lsn of the subscription's origin pg_<subscription oid> (the end LSN of the last source transaction applied, committed with it); it does not move on an idle source",
    slotName: SUBSCRIPTION,
    memoryMetric: undefined,
    start: async () => {
      const { stdout: schema } = await context.source.run('pg_dump', ['--schema-only', '-d', sourceUri]);
      await context.target.run('psql', ['-v', 'ON_ERROR_STOP=1', '-q', '-d', targetUri], { input: schema });
      await withPgClient(sourceUri, (client) =>
        client.query(`CREATE PUBLICATION ${PUBLICATION} FOR ALL TABLES`),
      );
      await withPgClient(targetUri, async (client) => {
        await client.query(
          `CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${connection}' PUBLICATION ${PUBLICATION} WITH (copy_data = true)`,
        );
        await waitForSubscriptionReady(client, context.timeoutMs);
      });
    },
    stop: async () => {
      await withPgClient(targetUri, (client) => client.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`));
      await waitForWorker(false);
    },
    resume: async () => {
      await withPgClient(targetUri, (client) => client.query(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`));
    },
    readApplied: async (client) => {
      const { rows } = await client.query<{ origin: string }>(
        `SELECT 'pg_' || oid AS origin FROM pg_subscription WHERE subname = $1`,
        [SUBSCRIPTION],
      );
      const origin = rows[0]?.origin;
      return origin ? readOriginLsn(client, origin) : undefined;
    },
    checkHealth: async () => {
      const errors = await withPgClient(targetUri, async (client) => {
        const { rows } = await client.query<{ errors: string }>(
          `SELECT sync_error_count + apply_error_count AS errors FROM pg_stat_subscription_stats WHERE subname = $1`,
          [SUBSCRIPTION],
        );
        return Number(rows[0]?.errors ?? 0);
      });
      if (errors > 0)
        throw new Error(
          `the subscription's workers reported ${errors} error(s):\n${await readServerLogErrors(context.target)}`,
        );
    },
    readMemoryKiB: async () => undefined,
    readCpuSeconds: async () => undefined,
    describeOutput: async () => {
      const errors = await readServerLogErrors(context.target);
      return errors ? `target server log:\n${errors}` : '';
    },
    cleanup: () => dropSubscription(context),
  };
}

function createPgcopydb(context: ReplayPeerContext): ReplayPeer {
  const pgcopydb = findOnPath('pgcopydb') ?? 'pgcopydb';
  const source = context.source.uri(BENCH_DATABASE);
  const target = context.target.uri(BENCH_DATABASE);
  const dir = join(context.workDir, 'pgcopydb');
  const connection = ['--source', source, '--target', target, '--dir', dir];
  const jobs = String(context.jobs);
  const cloneArgs = ['clone', '--follow', ...connection, '--table-jobs', jobs, '--index-jobs', jobs];
  const followArgs = ['follow', ...connection, '--resume', '--not-consistent'];
  const cleanupArgs = ['stream', 'cleanup', ...connection];
  // Its pg_dump and pg_restore must be the same major version as the servers: put ours first on PATH.
  const env = { ...process.env, PATH: `${context.binDir}:${process.env.PATH ?? ''}` };
  let current: { name: string; process: BackgroundProcess; logFile: string } | undefined;
  let launches = 0;
  const launch = (name: string, args: string[]) => {
    launches += 1;
    const logFile = join(context.workDir, `pgcopydb-${launches}-${name}.log`);
    current = { name, logFile, process: startBackgroundProcess({ file: pgcopydb, args, env, logFile }) };
  };
  const describe = async () => {
    if (!current) return '';
    // pgcopydb logs a line every 10 s while it waits; its errors (logged and then ignored by some of its
    // processes) say more than the tail.
    const text = await readFile(current.logFile, 'utf8').catch(() => current?.process.tail() ?? '');
    const errors = [...new Set(text.split('\n').filter((line) => /\b(ERROR|FATAL|BUG)\b/.test(line)))];
    return [
      ...(errors.length > 0
        ? [`pgcopydb ${current.name} errors (first 8 distinct):`, ...errors.slice(0, 8)]
        : []),
      `pgcopydb ${current.name} output (last 10 lines):`,
      lastLines(text, 10),
    ].join('\n');
  };
  const stopCurrent = async () => {
    if (!current) return;
    const running = current.process;
    if (!running.isRunning()) {
      const exit = await running.exited;
      const text = await describe();
      current = undefined;
      throw new Error(`pgcopydb exited with ${exit.exitCode ?? exit.signal}:\n${text}`);
    }
    // SIGTERM to the group: the main process alone waits for its workers instead of stopping them.
    await running.stop('SIGTERM', 'group', STOP_TIMEOUT_MS);
    current = undefined;
  };
  return {
    commands: [
      describeCommand({ file: 'pgcopydb', args: cloneArgs }),
      'stop: SIGTERM to its process group',
      describeCommand({ file: 'pgcopydb', args: followArgs }),
      describeCommand({ file: 'pgcopydb', args: cleanupArgs }),
    ],
    notes: [
      'pgcopydb follow writes the decoded changes (wal2json) into one JSON file per source WAL segment, closes a file when a change from the next segment arrives, then turns it into SQL and applies it, polling every 10 s; so after each marker the harness calls pg_switch_wal() and commits one more row (for every tool).',
      'Memory: the sum of VmRSS over its process group (its receive, transform and apply processes), sampled every second; the peak of those sums.',
    ],
    appliedPosition:
      "target: pg_replication_origin_status.remote_lsn of its origin 'pgcopydb' (pgcopydb 0.10 records the LSN of the commit record, i.e. its start, per applied transaction); it does not move on an idle source",
    slotName: 'pgcopydb',
    memoryMetric: 'peak over 1 s samples of the summed VmRSS of its process group',
    start: async () => launch('clone', cloneArgs),
    stop: stopCurrent,
    resume: async () => launch('follow', followArgs),
    readApplied: (client) => readOriginLsn(client, 'pgcopydb'),
    checkHealth: async () => {
      if (current && !current.process.isRunning()) {
        const exit = await current.process.exited;
        throw new Error(
          `pgcopydb ${current.name} exited with ${exit.exitCode ?? exit.signal}:\n${await describe()}`,
        );
      }
    },
    readMemoryKiB: async () => (current ? (await current.process.readUsage()).groupRssKiB : undefined),
    readCpuSeconds: async () => (current ? (await current.process.readUsage()).groupCpuSeconds : undefined),
    describeOutput: describe,
    cleanup: async () => {
      if (current) {
        const running = current.process;
        current = undefined;
        await running.stop('SIGTERM', 'group', STOP_TIMEOUT_MS);
      }
      const outcome = await runCommand({ file: pgcopydb, args: cleanupArgs, env, timeoutMs: 120_000 });
      if (!isSuccess(outcome)) throw new Error(describeFailure('pgcopydb stream cleanup', outcome));
    },
  };
}

/** pgcopydb's version line, or undefined when it is not installed. */
export async function readPgcopydbVersion(): Promise<string | undefined> {
  const pgcopydb = findOnPath('pgcopydb');
  if (!pgcopydb) return undefined;
  const outcome = await runCommand({ file: pgcopydb, args: ['--version'], timeoutMs: 10_000 });
  return outcome.stdoutTail.split('\n')[0]?.trim() || undefined;
}
