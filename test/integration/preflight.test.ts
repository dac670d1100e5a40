import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openClient } from '../../src/adapters/postgres/client';
import { parseConnInfo } from '../../src/adapters/postgres/connection';
import { ensureControlSchema, insertMigration, Phase } from '../../src/adapters/postgres/control-schema';
import { findFreePort } from '../../src/adapters/postgres/local-cluster';
import type { Finding, FindingCode, PreflightReport } from '../../src/core/preflight';
import { createRedactor } from '../../src/core/redact';
import { systemClock, type WorkflowContext } from '../../src/ports';
import { assertSourceReadyForSnapshot, runPreflight } from '../../src/workflows/preflight';
import {
  assertNoLeaks,
  freshDatabases,
  loadPagila,
  type Pair,
  query,
  runCli,
  startPair,
} from '../helpers/clusters';

const ctx: WorkflowContext = {
  emit: () => undefined,
  clock: systemClock,
  redactor: createRedactor(),
  env: process.env,
  stopSignal: new AbortController().signal,
};

async function preflight(
  uris: { source: string; target: string },
  options: { migrationId?: string; schemas?: string[] | null } = {},
): Promise<PreflightReport> {
  return runPreflight(
    ctx,
    { source: parseConnInfo(uris.source, 'source'), target: parseConnInfo(uris.target, 'target') },
    {
      migrationId: options.migrationId ?? 'default',
      schemas: options.schemas ?? null,
      pgBindir: undefined,
      walSampleMs: 200,
    },
  );
}

function only(report: PreflightReport, code: FindingCode): Finding {
  const matching = report.findings.filter((f) => f.code === code);
  expect(matching, `one ${code} in ${report.findings.map((f) => f.code).join(', ')}`).toHaveLength(1);
  return matching[0] as Finding;
}

const codesOf = (report: PreflightReport, severity: Finding['severity']) =>
  report.findings.filter((f) => f.severity === severity).map((f) => f.code);

describe('preflight against real clusters', () => {
  let pair: Pair;
  let replicaPair: Pair;
  let pagila: { source: string; target: string };
  let sourceMajor: number;
  const scratch: string[] = [];

  beforeAll(async () => {
    [pair, replicaPair] = await Promise.all([startPair(), startPair({ source: { wal_level: 'replica' } })]);
    pagila = await freshDatabases(pair, 'pagila');
    await loadPagila(pair.source, 'pagila');
    const [version] = await query<{ v: number }>(
      pair.source.uri(),
      `SELECT current_setting('server_version_num')::int AS v`,
    );
    sourceMajor = Math.floor((version?.v ?? 0) / 10000);
    await query(pair.source.uri(), 'CREATE ROLE preflight_reader LOGIN');
  });

  afterAll(async () => {
    // Stop the clusters even when the leak check fails, so a failing run leaves no server behind.
    try {
      for (const p of [pair, replicaPair]) if (p) await assertNoLeaks(p);
    } finally {
      await Promise.all([pair?.stop(), replicaPair?.stop()]);
      for (const dir of scratch) await rm(dir, { recursive: true, force: true });
    }
  });

  it('passes a healthy pagila source through the CLI with only the unlimited-WAL warning', async () => {
    const result = await runCli([
      'preflight',
      '--json',
      '--source',
      pagila.source,
      '--target',
      pagila.target,
    ]);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as PreflightReport;
    expect(report.ok).toBe(true);
    expect(codesOf(report, 'error')).toEqual([]);
    expect(codesOf(report, 'warning')).toEqual(['SOURCE_WAL_KEEP_UNLIMITED']);
    expect(only(report, 'SOURCE_WAL_KEEP_UNLIMITED').message).toContain('assumed 100.0 MB/s');
    expect(only(report, 'SERVER_VERSIONS').message).toContain(`source PostgreSQL ${sourceMajor}.`);
    expect(result.stderr).toContain('Preflight passed.');
  });

  it('exits 3 when the source wal_level is replica, with the observed value and the fix in --json', async () => {
    const uris = await freshDatabases(replicaPair, 'app');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
    const result = await runCli(['preflight', '--json', '--source', uris.source, '--target', uris.target]);
    expect(result.code).toBe(3);
    const report = JSON.parse(result.stdout) as PreflightReport;
    expect(report.ok).toBe(false);
    expect(only(report, 'SOURCE_WAL_LEVEL_NOT_LOGICAL')).toMatchObject({
      severity: 'error',
      message: expect.stringContaining("wal_level is 'replica'"),
      fix: expect.stringContaining('ALTER SYSTEM SET wal_level = logical;'),
    });
    expect(result.stderr).toContain('✗ SOURCE_WAL_LEVEL_NOT_LOGICAL');
    expect(result.stderr).toContain('Preflight failed');
  });

  it('names the table a login role cannot SELECT, and the slot and publication privileges it lacks', async () => {
    const uris = await freshDatabases(pair, 'privs');
    await query(
      uris.source,
      `CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE customers (id serial PRIMARY KEY);
       GRANT SELECT ON ALL TABLES IN SCHEMA public TO preflight_reader;
       GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO preflight_reader;
       REVOKE SELECT ON customers FROM preflight_reader`,
    );
    const report = await preflight({
      source: pair.source.uri('privs', 'preflight_reader'),
      target: uris.target,
    });
    expect(report.ok).toBe(false);
    const denied = only(report, 'SOURCE_SELECT_DENIED');
    expect(denied.objects).toEqual(['public.customers']);
    expect(denied.message).toContain('lacks SELECT on 1 table to copy: public.customers');
    expect(denied.fix).toBe('GRANT SELECT ON "public"."customers" TO "preflight_reader";');
    expect(only(report, 'SOURCE_CANNOT_REPLICATE').fix).toBe(
      'ALTER ROLE "preflight_reader" WITH REPLICATION;',
    );
    expect(only(report, 'SOURCE_TABLES_NOT_OWNED').objects).toEqual(['public.customers', 'public.orders']);
    expect(only(report, 'SOURCE_CANNOT_CREATE_PUBLICATION').severity).toBe('error');
  });

  it('refuses a target that already has user tables, naming them', async () => {
    const uris = await freshDatabases(pair, 'busy');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
    await query(uris.target, 'CREATE TABLE leftover (id int)');
    const report = await preflight(uris);
    const finding = only(report, 'TARGET_NOT_EMPTY');
    expect(finding.severity).toBe('error');
    expect(finding.objects).toEqual(['public.leftover']);
  });

  it('refuses a slot of this migration id the target does not record, and calls it a resume once it does', async () => {
    const uris = await freshDatabases(pair, 'slotted');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
    await query(
      uris.source,
      `SELECT pg_create_logical_replication_slot('pg_live_migrate_default', 'pgoutput')`,
    );
    try {
      const conflict = await preflight(uris);
      expect(conflict.ok).toBe(false);
      const finding = only(conflict, 'SOURCE_SLOT_CONFLICT');
      expect(finding.severity).toBe('error');
      expect(finding.message).toContain("'pg_live_migrate_default' already exists");
      expect(finding.fix).toContain('pg-live-migrate clean --migration-id default');

      const target = await openClient(parseConnInfo(uris.target, 'target'));
      try {
        await ensureControlSchema(target);
        await insertMigration(target, {
          migrationId: 'default',
          phase: Phase.copy,
          slotName: 'pg_live_migrate_default',
          publications: [],
          snapshotName: null,
          snapshotHolderPid: null,
          consistentLsn: null,
          schemas: null,
        });
      } finally {
        await target.end();
      }
      const resume = await preflight(uris);
      expect(resume.ok).toBe(true);
      expect(only(resume, 'MIGRATION_RESUMABLE').message).toContain("has slot 'pg_live_migrate_default'");
      expect(resume.findings.map((f) => f.code)).not.toContain('SOURCE_SLOT_CONFLICT');
    } finally {
      await query(uris.source, `SELECT pg_drop_replication_slot('pg_live_migrate_default')`);
    }
  });

  it('refuses a pg_dump older than the source, with the package and --pg-bindir to use', async () => {
    const bin = await mkdtemp(join(tmpdir(), 'plm-old-tools-'));
    scratch.push(bin);
    for (const tool of ['pg_dump', 'pg_restore', 'pg_dumpall']) {
      // A stand-in for an old client installation: it only answers --version.
      await writeFile(join(bin, tool), `#!/bin/sh\necho "${tool} (PostgreSQL) 9.6.24"\n`);
      await chmod(join(bin, tool), 0o755);
    }
    const result = await runCli([
      'preflight',
      '--json',
      '--source',
      pagila.source,
      '--target',
      pagila.target,
      '--pg-bindir',
      bin,
    ]);
    expect(result.code).toBe(3);
    const report = JSON.parse(result.stdout) as PreflightReport;
    const dump = report.findings.find((f) => f.code === 'PG_TOOL_TOO_OLD' && f.objects?.[0] === 'pg_dump');
    expect(dump).toMatchObject({
      severity: 'error',
      message: expect.stringContaining(`${join(bin, 'pg_dump')} is major version 9`),
      fix: expect.stringContaining(`postgresql-client-${sourceMajor}`),
    });
    expect(dump?.fix).toContain('--pg-bindir');
  });

  it('warns about a table without primary key and still passes', async () => {
    const uris = await freshDatabases(pair, 'nokey');
    await query(
      uris.source,
      'CREATE TABLE events (at timestamptz, body text); CREATE TABLE orders (id int PRIMARY KEY)',
    );
    const report = await preflight(uris);
    expect(report.ok).toBe(true);
    const finding = only(report, 'TABLES_WITHOUT_REPLICA_IDENTITY');
    expect(finding.severity).toBe('warning');
    expect(finding.objects).toEqual(['public.events']);
    expect(finding.fix).toContain('ALTER TABLE "public"."events" REPLICA IDENTITY FULL;');
  });

  it('reports unlogged tables, large objects and a tablespace the target lacks', async () => {
    const uris = await freshDatabases(pair, 'edge');
    const location = `${pair.source.dataDir}-tablespace`;
    scratch.push(location);
    await mkdir(location);
    if (process.getuid?.() === 0) execFileSync('chown', ['postgres', location]);
    await query(pair.source.uri(), `CREATE TABLESPACE preflight_fast LOCATION '${location}'`);
    try {
      await query(
        uris.source,
        `CREATE UNLOGGED TABLE cache (k text PRIMARY KEY); CREATE TABLE hot (id int PRIMARY KEY) TABLESPACE preflight_fast;
         SELECT lo_create(0)`,
      );
      const report = await preflight(uris);
      expect(only(report, 'UNLOGGED_TABLES').objects).toEqual(['public.cache']);
      expect(only(report, 'LARGE_OBJECTS').message).toContain('1 large object ');
      const tablespace = only(report, 'TABLESPACE_MISSING_ON_TARGET');
      expect(tablespace.objects).toEqual(['public.hot']);
      expect(tablespace.fix).toContain('CREATE TABLESPACE "preflight_fast"');
    } finally {
      await query(uris.source, 'DROP TABLE hot');
      await query(pair.source.uri(), 'DROP TABLESPACE preflight_fast');
    }
  });

  it('turns connection failures on both sides into findings instead of throwing', async () => {
    const closed = await findFreePort();
    const report = await preflight({
      source: `postgresql://postgres:not-the-password@127.0.0.1:${closed}/app`,
      target: pair.target.uri('no_such_database'),
    });
    expect(report.ok).toBe(false);
    expect(only(report, 'SOURCE_UNREACHABLE').message).toContain(`127.0.0.1:${closed}`);
    expect(only(report, 'TARGET_DATABASE_NOT_FOUND').fix).toContain('database name');
    expect(JSON.stringify(report)).not.toContain('not-the-password');
  });

  describe('the guard snapshot and copy run before creating anything', () => {
    async function guard(uri: string) {
      const client = await openClient(parseConnInfo(uri, 'source'));
      try {
        await assertSourceReadyForSnapshot(client, { migrationId: 'default', schemas: null });
      } finally {
        await client.end();
      }
    }

    it('lets a ready source through', async () => {
      await expect(guard(pagila.source)).resolves.toBeUndefined();
    });

    it('stops on wal_level replica with its stable code, the observation and the fix', async () => {
      await freshDatabases(replicaPair, 'guarded');
      await expect(guard(replicaPair.source.uri('guarded'))).rejects.toMatchObject({
        code: 'SOURCE_WAL_LEVEL_NOT_LOGICAL',
        message: expect.stringContaining("'replica'"),
        hint: expect.stringContaining('ALTER SYSTEM SET wal_level = logical;'),
      });
    });

    it('stops a role without the needed privileges with PERMISSION_DENIED', async () => {
      const uris = await freshDatabases(pair, 'guard_privs');
      await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
      await expect(guard(pair.source.uri('guard_privs', 'preflight_reader'))).rejects.toMatchObject({
        code: 'PERMISSION_DENIED',
        message: expect.stringContaining('run preflight for all of them'),
      });
    });
  });
});
