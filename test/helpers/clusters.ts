// Test harness: throwaway source and target clusters from the machine's PostgreSQL binaries, databases
// per test, the CLI run as a user would run it, and leak checks (slots, backends, child processes).
import { type ChildProcess, spawn } from 'node:child_process';
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
