// Test harness: throwaway source and target clusters from the machine's PostgreSQL binaries, databases
// per test, the CLI run as a user would run it, and leak checks (slots, backends, child processes).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import {
  findPgBinDir,
  type LocalCluster,
  startLocalCluster,
} from '../../src/adapters/postgres/local-cluster';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/cli.js');
export const PAGILA_DIR = join(ROOT, 'datasets/pagila');

export interface Pair {
  source: LocalCluster;
  target: LocalCluster;
  binDir: string;
  stop(): Promise<void>;
}

export async function startPair(
  settings: { source?: Record<string, string | number>; target?: Record<string, string | number> } = {},
): Promise<Pair> {
  const binDir = await findPgBinDir(process.env);
  if (!binDir) throw new Error('No PostgreSQL server binaries found: install postgresql or set PG_BINDIR');
  const [source, target] = await Promise.all([
    startLocalCluster({ name: 'source', binDir, ...(settings.source ? { settings: settings.source } : {}) }),
    startLocalCluster({ name: 'target', binDir, ...(settings.target ? { settings: settings.target } : {}) }),
  ]);
  return {
    source,
    target,
    binDir,
    stop: async () => {
      await Promise.all([source.stop(), target.stop()]);
    },
  };
}

export async function query<T = Record<string, unknown>>(
  uri: string,
  text: string,
  params: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: uri, application_name: 'plm-test' });
  await client.connect();
  try {
    const result = await client.query(text, params);
    const last = Array.isArray(result) ? result[result.length - 1] : result;
    return (last?.rows ?? []) as T[];
  } finally {
    await client.end();
  }
}

/** Creates (or re-creates) database `name` on both clusters; returns their URIs. */
export async function freshDatabases(pair: Pair, name: string): Promise<{ source: string; target: string }> {
  for (const cluster of [pair.source, pair.target]) {
    await query(cluster.uri(), `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await query(cluster.uri(), `CREATE DATABASE "${name}"`);
  }
  return { source: pair.source.uri(name), target: pair.target.uri(name) };
}

export async function psqlFile(cluster: LocalCluster, database: string, file: string): Promise<void> {
  await cluster.run('psql', [
    '-h',
    '127.0.0.1',
    '-p',
    String(cluster.port),
    '-U',
    'postgres',
    '-d',
    database,
    '-q',
    '-X',
    '-v',
    'ON_ERROR_STOP=1',
    '-f',
    file,
  ]);
}

/** Loads pagila (schema + data) and populates its materialized view, as a real source would have it. */
export async function loadPagila(cluster: LocalCluster, database: string): Promise<void> {
  await psqlFile(cluster, database, join(PAGILA_DIR, 'pagila-schema.sql'));
  await psqlFile(cluster, database, join(PAGILA_DIR, 'pagila-data.sql'));
  await query(cluster.uri(database), 'REFRESH MATERIALIZED VIEW public.rental_by_category; ANALYZE');
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliProcess {
  child: ChildProcess;
  result: Promise<CliResult>;
  output(): { stdout: string; stderr: string };
}

const children = new Set<ChildProcess>();

export function spawnCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const result = new Promise<CliResult>((resolvePromise) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
  return { child, result, output: () => ({ stdout, stderr }) };
}

export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CliResult> {
  return spawnCli(args, options).result;
}

export async function waitFor<T>(
  condition: () => Promise<T | undefined | false> | T | undefined | false,
  options: { timeoutMs: number; intervalMs?: number; what?: string },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 100));
  }
  throw new Error(
    `timed out after ${options.timeoutMs} ms waiting for ${options.what ?? 'a condition'}${lastError ? `: ${String(lastError)}` : ''}`,
  );
}

/**
 * Fails when a test left something behind: CLI child processes, backends of the tool
 * (application_name pg-live-migrate) or replication slots on the source.
 */
/** Checks that nothing leaked on either cluster, and stops both whatever the check says. */
export async function checkAndStop(pair: Pair): Promise<void> {
  try {
    await assertNoLeaks(pair);
  } finally {
    await pair.stop();
  }
}

export async function assertNoLeaks(pair: Pair): Promise<void> {
  const problems: string[] = [];
  if (children.size > 0) problems.push(`${children.size} CLI processes still running`);
  for (const cluster of [pair.source, pair.target]) {
    const backends = await waitFor(
      async () => {
        const rows = await query<{ n: number }>(
          cluster.uri(),
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pg-live-migrate'`,
        );
        return rows[0]?.n === 0 ? 0 : undefined;
      },
      { timeoutMs: 5000, what: `no tool backends on ${cluster.name}` },
    ).catch(() => -1);
    if (backends !== 0) problems.push(`tool backends left on ${cluster.name}`);
  }
  const slots = await query<{ slot_name: string }>(
    pair.source.uri(),
    'SELECT slot_name FROM pg_replication_slots',
  );
  if (slots.length > 0) problems.push(`replication slots left: ${slots.map((s) => s.slot_name).join(', ')}`);
  for (const child of children) child.kill('SIGKILL');
  if (problems.length) throw new Error(`leak check failed: ${problems.join('; ')}`);
}

// ---- Chaos tests: a seeded random source, a writer with checkable sequences, background pgbench. ----

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Whole number in [lo, hi]. */
  int(lo: number, hi: number): number;
  pick<T>(items: readonly T[]): T;
  shuffle<T>(items: readonly T[]): T[];
}

/** mulberry32: small, fast and fully determined by the seed (print the seed so a failing run replays). */
export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return {
    next,
    int,
    pick: (items) => items[int(0, items.length - 1)] as (typeof items)[number],
    shuffle: (items) => {
      const out = [...items];
      for (let i = out.length - 1; i > 0; i--) {
        const j = int(0, i);
        [out[i], out[j]] = [out[j] as (typeof out)[number], out[i] as (typeof out)[number]];
      }
      return out;
    },
  };
}

/**
 * The writer's tables: `items` (bigserial key; rows inserted, updated and deleted) and `audit` (no key,
 * insert only), both carrying a sequence number that grows by one per row, `rows` of each to start with.
 */
export async function createWriterTables(uri: string, rows: number): Promise<void> {
  await query(
    uri,
    `CREATE TABLE items (id bigserial PRIMARY KEY, seq bigint NOT NULL, version integer NOT NULL DEFAULT 0,
                         payload text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE audit (seq bigint NOT NULL, item_id bigint, op text NOT NULL, note text,
                         at timestamptz NOT NULL DEFAULT clock_timestamp());
     INSERT INTO items (seq, payload) SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, ${rows}) g;
     INSERT INTO audit (seq, item_id, op, note) SELECT g, g, 'seed', md5(g::text) FROM generate_series(1, ${rows}) g;
     ANALYZE items, audit`,
  );
}

export interface WriterStats {
  transactions: number;
  /** Transactions that failed before COMMIT was sent (rolled back). */
  failed: number;
  /** Transactions whose COMMIT got no answer (connection lost): committed or not, the source knows. */
  uncertain: number;
  /** Audit sequence numbers of transactions whose COMMIT succeeded. */
  committedAuditSeqs: number[];
  reconnects: number;
  lastError: string | undefined;
}

export interface Writer {
  stats(): WriterStats;
  /** Highest audit sequence number committed so far. */
  lastCommittedAuditSeq(): number;
  /** Finishes the transaction in flight, then stops. */
  stop(): Promise<WriterStats>;
}

/**
 * Small transactions on the writer's tables until stopped: inserts of 1-3 items, updates of 1-2 and
 * deletes of one (prefilled rows included), each change with an `audit` row. About a third are run as
 * interleaved pairs on two sessions that commit a few milliseconds apart, so that the second commit record
 * often directly follows the first in the WAL (as concurrent OLTP commits do). Reconnects by itself.
 */
export function startWriter(uri: string, o: { random: Random; prefilled: number; pauseMs?: number }): Writer {
  const { random } = o;
  const live: number[] = Array.from({ length: o.prefilled }, (_, i) => i + 1);
  let itemSeq = o.prefilled;
  let auditSeq = o.prefilled;
  let stopping = false;
  const stats: WriterStats = {
    transactions: 0,
    failed: 0,
    uncertain: 0,
    committedAuditSeqs: [],
    reconnects: 0,
    lastError: undefined,
  };
  const takeLive = () => {
    const i = random.int(0, live.length - 1);
    const id = live[i] as number;
    live[i] = live[live.length - 1] as number;
    live.pop();
    return id;
  };
  const connect = async () => {
    for (;;) {
      const client = new pg.Client({ connectionString: uri, application_name: 'plm-test-writer' });
      client.on('error', () => undefined);
      try {
        await client.connect();
        return client;
      } catch (error) {
        stats.lastError = String(error);
        await client.end().catch(() => undefined);
        if (stopping) return undefined;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  interface Txn {
    client: pg.Client;
    audits: { seq: number; itemId: number; op: string }[];
    inserted: number[];
    state: 'open' | 'commit-sent' | 'settled';
  }
  /** One transaction's changes (not its commit); `updates` false where a concurrent session could block it. */
  const writeChanges = async (client: pg.Client, updates: boolean): Promise<Txn> => {
    const txn: Txn = { client, audits: [], inserted: [], state: 'open' };
    const roll = random.next();
    await client.query('BEGIN');
    if (roll < 0.55 || live.length < 10 || (!updates && roll < 0.85)) {
      const values = Array.from({ length: random.int(1, 3) }, () => ++itemSeq);
      const { rows } = await client.query(
        `INSERT INTO items (seq, payload) SELECT s, md5(s::text) || $2 FROM unnest($1::bigint[]) s RETURNING id`,
        [values, `-${random.int(0, 1e6)}`],
      );
      for (const r of rows) {
        txn.inserted.push(Number(r.id));
        txn.audits.push({ seq: ++auditSeq, itemId: Number(r.id), op: 'insert' });
      }
    } else if (roll < 0.85) {
      for (let i = random.int(1, 2); i > 0; i--) {
        const id = live[random.int(0, live.length - 1)] as number;
        await client.query(
          `UPDATE items SET version = version + 1, payload = md5(payload), updated_at = now() WHERE id = $1`,
          [id],
        );
        txn.audits.push({ seq: ++auditSeq, itemId: id, op: 'update' });
      }
    } else {
      // Taken out of the live set first: if this transaction is lost, the id is simply not touched again.
      const id = takeLive();
      await client.query('DELETE FROM items WHERE id = $1', [id]);
      txn.audits.push({ seq: ++auditSeq, itemId: id, op: 'delete' });
    }
    await client.query(
      `INSERT INTO audit (seq, item_id, op, note) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])`,
      [
        txn.audits.map((a) => a.seq),
        txn.audits.map((a) => a.itemId),
        txn.audits.map((a) => a.op),
        txn.audits.map(() => 'w'),
      ],
    );
    return txn;
  };
  const commit = async (txn: Txn) => {
    txn.state = 'commit-sent';
    await txn.client.query('COMMIT');
    txn.state = 'settled';
    stats.transactions += 1;
    live.push(...txn.inserted);
    for (const a of txn.audits) stats.committedAuditSeqs.push(a.seq);
  };
  const loop = async () => {
    let a = await connect();
    let b = await connect();
    while (a && b && !stopping) {
      const txns: Txn[] = [];
      try {
        if (random.next() < 0.3) {
          // Both sessions write, then commit one right after the other.
          txns.push(await writeChanges(a, false));
          txns.push(await writeChanges(b, false));
          await commit(txns[0] as Txn);
          await new Promise((r) => setTimeout(r, random.int(0, 15)));
          await commit(txns[1] as Txn);
        } else {
          txns.push(await writeChanges(a, true));
          await commit(txns[0] as Txn);
        }
      } catch (error) {
        stats.lastError = String(error);
        for (const txn of txns) {
          if (txn.state === 'commit-sent') stats.uncertain += 1;
          else if (txn.state === 'open') stats.failed += 1;
        }
        if (txns.length === 0) stats.failed += 1;
        await a.end().catch(() => undefined);
        await b.end().catch(() => undefined);
        stats.reconnects += 1;
        a = await connect();
        b = await connect();
        continue;
      }
      await new Promise((r) => setTimeout(r, o.pauseMs ?? 10));
    }
    await a?.end().catch(() => undefined);
    await b?.end().catch(() => undefined);
  };
  const done = loop();
  return {
    stats: () => stats,
    lastCommittedAuditSeq: () => stats.committedAuditSeqs[stats.committedAuditSeqs.length - 1] ?? o.prefilled,
    stop: async () => {
      stopping = true;
      await done;
      return stats;
    },
  };
}

export interface Background {
  /** How many times the program was started again after it exited on its own. */
  restarts(): number;
  stop(): Promise<void>;
}

/** `pgbench` run in the background until stopped, started again whenever it exits (e.g. a server restart). */
export function startPgbench(cluster: LocalCluster, database: string, args: string[]): Background {
  let stopping = false;
  let restarts = 0;
  let current: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const launch = () => {
    const child = spawn(
      join(cluster.binDir, 'pgbench'),
      ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', ...args, database],
      { stdio: 'ignore' },
    );
    current = child;
    exited = new Promise((resolvePromise) => {
      child.on('close', () => {
        resolvePromise();
        if (stopping) return;
        restarts += 1;
        setTimeout(() => {
          if (!stopping) launch();
        }, 300);
      });
    });
  };
  launch();
  return {
    restarts: () => restarts,
    stop: async () => {
      stopping = true;
      current?.kill('SIGINT');
      await exited;
    },
  };
}

export interface SequenceDiff {
  table: string;
  sourceRows: number;
  targetRows: number;
  /** On the source, not on the target (first 20). */
  missing: string[];
  /** On the target, not on the source (first 20). */
  extra: string[];
  /** More often on the target than on the source (first 20). */
  duplicated: string[];
  counts: { missing: number; extra: number; duplicated: number };
}

/** Compares the multiset of a sequence column on both sides: equal when nothing is lost or doubled. */
export async function diffSequences(
  sourceUri: string,
  targetUri: string,
  table: string,
  column = 'seq',
): Promise<SequenceDiff> {
  const read = async (uri: string) => {
    const rows = await query<{ v: string; n: number }>(
      uri,
      `SELECT ${column}::text AS v, count(*)::int AS n FROM ${table} GROUP BY 1`,
    );
    return new Map(rows.map((r) => [r.v, r.n]));
  };
  const [source, target] = await Promise.all([read(sourceUri), read(targetUri)]);
  const missing: string[] = [];
  const extra: string[] = [];
  const duplicated: string[] = [];
  for (const v of source.keys()) if (!target.has(v)) missing.push(v);
  for (const [v, n] of target) {
    if (!source.has(v)) extra.push(v);
    else if (n > (source.get(v) ?? 0)) duplicated.push(v);
  }
  const sum = (m: Map<string, number>) => [...m.values()].reduce((s, n) => s + n, 0);
  const byNumber = (a: string, b: string) => Number(a) - Number(b);
  return {
    table,
    sourceRows: sum(source),
    targetRows: sum(target),
    missing: missing.sort(byNumber).slice(0, 20),
    extra: extra.sort(byNumber).slice(0, 20),
    duplicated: duplicated.sort(byNumber).slice(0, 20),
    counts: { missing: missing.length, extra: extra.length, duplicated: duplicated.length },
  };
}

/** Copies both servers' logs into `dir`/logs before the clusters go, so a failed chaos run can be read. */
export async function keepServerLogs(pair: Pair, dir: string): Promise<void> {
  const { copyFile, mkdir } = await import('node:fs/promises');
  await mkdir(join(dir, 'logs'), { recursive: true });
  for (const cluster of [pair.source, pair.target]) {
    await copyFile(
      join(cluster.dataDir, 'server.log'),
      join(dir, 'logs', `${cluster.name}-server.log`),
    ).catch(() => undefined);
  }
}

/** pgbench's tables at `scale` in `database` (pgbench -i, quietly). */
export async function pgbenchInit(cluster: LocalCluster, database: string, scale: number): Promise<void> {
  await cluster.run('pgbench', [
    '-i',
    '-q',
    '-s',
    String(scale),
    '-h',
    '127.0.0.1',
    '-p',
    String(cluster.port),
    '-U',
    'postgres',
    database,
  ]);
}

/** Row count and an order-fixed md5 of a table's rows, to compare one table across servers or snapshots. */
export const tableDigestSql = (table: string, order: string): string =>
  `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY ${order}), '')) AS h FROM ${table} t`;

/**
 * Creates `user` with `password` on the source and makes the cluster demand scram-sha-256 for it over TCP
 * (the harness trusts everyone else); returns once a wrong password is refused.
 */
export async function requireScram(
  pair: Pair,
  user: string,
  password: string,
  o: { superuser?: boolean } = {},
): Promise<void> {
  await query(
    pair.source.uri(),
    `CREATE ROLE ${user} LOGIN${o.superuser ? ' SUPERUSER' : ''} PASSWORD '${password}'`,
  );
  const hba = join(pair.source.dataDir, 'pg_hba.conf');
  const rules = await readFile(hba, 'utf8');
  await writeFile(hba, `host all ${user} 127.0.0.1/32 scram-sha-256\n${rules}`);
  await query(pair.source.uri(), 'SELECT pg_reload_conf()');
  // The reload is asynchronous: wait until a wrong password is refused.
  await waitFor(
    async () => {
      const client = new pg.Client({
        host: '127.0.0.1',
        port: pair.source.port,
        user,
        database: 'postgres',
        password: 'certainly-wrong',
      });
      try {
        await client.connect();
        await client.end();
        return false;
      } catch (error) {
        return (error as { code?: string }).code === '28P01';
      }
    },
    { timeoutMs: 10_000, what: `scram-sha-256 for ${user}` },
  );
}
