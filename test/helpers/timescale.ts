// Whether the harness's PostgreSQL has TimescaleDB, and the settings a cluster needs for it. The TimescaleDB
// tests skip (saying why) without it: it is not packaged for this machine's PostgreSQL and is built by hand.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findPgBinDir } from '../../src/adapters/postgres/local-cluster';

/**
 * pg_available_extensions lists exactly the control files in `<sharedir>/extension`, so this reads the same
 * answer without starting a server (describe.skipIf needs it before any test runs).
 */
export async function timescaleInstalled(): Promise<{ installed: boolean; why: string }> {
  const binDir = await findPgBinDir(process.env);
  if (!binDir) return { installed: false, why: 'no PostgreSQL server binaries were found' };
  let shareDir: string;
  try {
    shareDir = execFileSync(join(binDir, 'pg_config'), ['--sharedir'], { encoding: 'utf8' }).trim();
  } catch {
    return { installed: false, why: `${binDir}/pg_config could not tell the share directory` };
  }
  const control = join(shareDir, 'extension', 'timescaledb.control');
  return existsSync(control)
    ? { installed: true, why: '' }
    : { installed: false, why: `${control} does not exist (pg_available_extensions would not list it)` };
}

/** Checks once and warns when the tests of `what` are skipped. */
export async function timescaleForTests(what: string): Promise<boolean> {
  const found = await timescaleInstalled();
  if (!found.installed) {
    console.warn(
      `Skipping ${what}: TimescaleDB is not installed for this PostgreSQL (${found.why}). Build and install it (see docs/decisions.md, "TimescaleDB in preflight") to run them.`,
    );
  }
  return found.installed;
}

export const TIMESCALE_SETTINGS = {
  shared_preload_libraries: "'timescaledb'",
  'timescaledb.telemetry_level': 'off',
};
