// Throwaway local PostgreSQL clusters (initdb + pg_ctl) for the demo, the benchmarks and the tests.
// Runs the server as the `postgres` OS user when we are root, because postgres refuses to run as root.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface LocalCluster {
  readonly name: string;
  readonly port: number;
  readonly dataDir: string;
  readonly binDir: string;
  /** libpq URI for a database on this cluster (superuser `postgres`, trust auth). */
  uri(database?: string, user?: string): string;
  /** Runs one of the cluster's binaries (psql, pgbench, ...) as the cluster's OS user. */
  run(
    tool: string,
    args: string[],
    options?: { input?: string },
  ): Promise<{ stdout: string; stderr: string }>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  name: string;
  binDir: string;
  /** postgresql.conf settings appended after initdb. */
  settings?: Record<string, string | number>;
  /** Parent folder for the data directory (default: the OS temp dir). */
  parentDir?: string;
}

/** PG_BINDIR, else `pg_config --bindir` (when it holds initdb), else the newest /usr/lib/postgresql/N/bin. */
export async function findPgBinDir(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (env.PG_BINDIR && existsSync(join(env.PG_BINDIR, 'initdb'))) return env.PG_BINDIR;
  try {
    const { stdout } = await execFileAsync('pg_config', ['--bindir']);
    const dir = stdout.trim();
    if (existsSync(join(dir, 'initdb'))) return dir;
  } catch {
    // pg_config is not installed: fall through to the Debian layout.
  }
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

async function runAs(
  file: string,
  args: string[],
  input?: string,
): Promise<{ stdout: string; stderr: string }> {
  const [cmd, cmdArgs] = isRoot() ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, cmdArgs as string[], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${file} ${args.join(' ')} exited with ${code}: ${stderr.slice(-2000)}`));
    });
    child.stdin.end(input ?? '');
  });
}

export async function startLocalCluster(options: StartClusterOptions): Promise<LocalCluster> {
  const parent = options.parentDir ?? tmpdir();
  const dataDir = await mkdtemp(join(parent, `plm-${options.name}-`));
  if (isRoot()) {
    const { uid, gid } = userInfoFor('postgres');
    await chown(dataDir, uid, gid);
  }
  await chmod(dataDir, 0o700);
  const bin = (tool: string) => join(options.binDir, tool);
  await runAs(bin('initdb'), [
    '-D',
    dataDir,
    '-U',
    'postgres',
    '--auth=trust',
    '-E',
    'UTF8',
    '--locale=C',
    '-N',
  ]);
  const port = await findFreePort();
  const settings: Record<string, string | number> = {
    port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${dataDir}'`,
    wal_level: 'logical',
    max_replication_slots: 20,
    max_wal_senders: 20,
    max_connections: 100,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    shared_buffers: "'128MB'",
    logging_collector: 'off',
    ...options.settings,
  };
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  await appendFile(join(dataDir, 'postgresql.conf'), `\n${conf}\n`);
  const logFile = join(dataDir, 'server.log');
  const start = () => runAs(bin('pg_ctl'), ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start']);
  await start();
  const cluster: LocalCluster = {
    name: options.name,
    port,
    dataDir,
    binDir: options.binDir,
    uri: (database = 'postgres', user = 'postgres') =>
      `postgresql://${encodeURIComponent(user)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    run: (tool, args, runOptions) => runAs(bin(tool), args, runOptions?.input),
    restart: async () => {
      await runAs(bin('pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
      await start();
    },
    stop: async () => {
      await runAs(bin('pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return cluster;
}

function userInfoFor(name: string): { uid: number; gid: number } {
  // os.userInfo only describes the current user; read the account from /etc/passwd (once per cluster).
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`OS user '${name}' not found: install PostgreSQL's server package`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
