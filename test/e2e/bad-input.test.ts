import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../src/adapters/postgres/local-cluster';
import {
  assertNoLeaks,
  type CliResult,
  freshDatabases,
  type Pair,
  query,
  requireScram,
  runCli,
  startPair,
} from '../helpers/clusters';

/** Everything a failed command could have left behind: slots, publications, state rows, tables. */
async function leftovers(uris: { source: string; target: string }) {
  const slots = await query<{ slot_name: string }>(
    uris.source,
    `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pg\\_live\\_migrate%' ORDER BY 1`,
  );
  const publications = await query<{ pubname: string }>(
    uris.source,
    `SELECT pubname FROM pg_publication WHERE pubname LIKE 'pg\\_live\\_migrate%' ORDER BY 1`,
  );
  const [control] = await query<{ present: boolean }>(
    uris.target,
    `SELECT to_regclass('_pg_live_migrate.migration') IS NOT NULL AS present`,
  );
  const [state] = control?.present
    ? await query<{ n: number }>(
        uris.target,
        `SELECT (SELECT count(*) FROM _pg_live_migrate.migration) + (SELECT count(*) FROM _pg_live_migrate.step)
              + (SELECT count(*) FROM _pg_live_migrate.copy_part) AS n`,
      )
    : [{ n: 0 }];
  const tables = await query<{ name: string }>(
    uris.target,
    `SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables
      WHERE schemaname NOT IN ('pg_catalog', 'information_schema', '_pg_live_migrate') ORDER BY 1`,
  );
  return {
    slots: slots.map((r) => r.slot_name),
    publications: publications.map((r) => r.pubname),
    stateRows: Number(state?.n ?? 0),
    targetTables: tables.map((r) => r.name),
  };
}

/** The stable code, the observation and a hint, as the CLI prints every failure. */
function expectExplained(result: CliResult, code: string, observed: string) {
  expect(result.stderr).toContain(`error ${code}: `);
  expect(result.stderr).toContain(observed);
  expect(result.stderr).toMatch(/\n\s+hint: \S/);
}

describe('bad input through the CLI', () => {
  let pair: Pair;
  let replicaPair: Pair;
  const dirs: string[] = [];
  const workDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'plm-bad-input-'));
    dirs.push(dir);
    return dir;
  };
  const copy = async (source: string, target: string, extra: string[] = []) =>
    runCli(['copy', '--source', source, '--target', target, '--dir', await workDir(), ...extra]);

  beforeAll(async () => {
    [pair, replicaPair] = await Promise.all([startPair(), startPair({ source: { wal_level: 'replica' } })]);
  });

  afterAll(async () => {
    // Stop the clusters even when the leak check fails, so a failing run leaves no server behind.
    try {
      for (const p of [pair, replicaPair]) if (p) await assertNoLeaks(p);
    } finally {
      await Promise.all([pair?.stop(), replicaPair?.stop()]);
      for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    }
  });

  it('copy from a source with wal_level=replica stops before creating anything, naming the setting', async () => {
    const uris = await freshDatabases(replicaPair, 'app');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1)');
    const result = await copy(uris.source, uris.target, ['--json']);
    expect(result.code).toBe(3);
    expectExplained(result, 'SOURCE_WAL_LEVEL_NOT_LOGICAL', "wal_level is 'replica'");
    expect(result.stderr).toContain('ALTER SYSTEM SET wal_level = logical;');
    expect(JSON.parse(result.stdout)).toMatchObject({
      ok: false,
      error: { code: 'SOURCE_WAL_LEVEL_NOT_LOGICAL' },
    });
    expect(await leftovers(uris)).toEqual({ slots: [], publications: [], stateRows: 0, targetTables: [] });
  });

  it('a wrong password fails with AUTHENTICATION_FAILED and the password is printed nowhere', async () => {
    const uris = await freshDatabases(pair, 'auth');
    const wrong = 'Wr0ng-Staple-Battery';
    await requireScram(pair, 'scram_user', 'Right-Horse-Battery');
    const source = `postgresql://scram_user:${wrong}@127.0.0.1:${pair.source.port}/auth`;
    const result = await copy(source, uris.target, ['--json']);
    expect(result.code).toBe(4);
    expectExplained(result, 'AUTHENTICATION_FAILED', 'password authentication failed for user "scram_user"');
    expect(JSON.parse(result.stdout)).toMatchObject({ error: { code: 'AUTHENTICATION_FAILED' } });
    expect(`${result.stdout}${result.stderr}`).not.toContain(wrong);
    expect(await leftovers(uris)).toEqual({ slots: [], publications: [], stateRows: 0, targetTables: [] });
  });

  it('an unreachable source fails with CONNECTION_FAILED (exit 4) naming host and port', async () => {
    const uris = await freshDatabases(pair, 'unreachable');
    const closed = await findFreePort();
    const result = await copy(`postgresql://postgres@127.0.0.1:${closed}/app`, uris.target);
    expect(result.code).toBe(4);
    expectExplained(result, 'CONNECTION_FAILED', `127.0.0.1:${closed}`);
    expect(await leftovers(uris)).toEqual({ slots: [], publications: [], stateRows: 0, targetTables: [] });
  });

  it('a target that already has tables fails with TARGET_NOT_EMPTY naming them', async () => {
    const uris = await freshDatabases(pair, 'busy');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
    await query(uris.target, 'CREATE TABLE leftover (id int)');
    const result = await copy(uris.source, uris.target);
    expect(result.code).toBe(4);
    expectExplained(result, 'TARGET_NOT_EMPTY', '"public"."leftover"');
    expect(await leftovers(uris)).toEqual({
      slots: [],
      publications: [],
      stateRows: 0,
      targetTables: ['public.leftover'],
    });
  });

  describe('a source user without SELECT on one table', () => {
    let uris: { source: string; target: string };
    let copierSource: string;

    beforeAll(async () => {
      uris = await freshDatabases(pair, 'noselect');
      // The user owns the tables and may replicate, so the missing SELECT is the only thing wrong.
      await query(
        uris.source,
        `CREATE ROLE copier LOGIN REPLICATION; GRANT CREATE ON DATABASE noselect TO copier;
         CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE secrets (id int PRIMARY KEY);
         ALTER TABLE orders OWNER TO copier; ALTER TABLE secrets OWNER TO copier;
         REVOKE SELECT ON secrets FROM copier`,
      );
      copierSource = pair.source.uri('noselect', 'copier');
    });

    afterAll(async () => {
      // Only matters when copy wrongly went ahead: leave no slot for the tests after this one.
      await runCli(['clean', '--source', uris.source, '--target', uris.target, '--dir', await workDir()]);
    });

    it('preflight exits 3 naming the table and the GRANT', async () => {
      const result = await runCli([
        'preflight',
        '--json',
        '--source',
        copierSource,
        '--target',
        uris.target,
        '--dir',
        await workDir(),
      ]);
      expect(result.code).toBe(3);
      expect(result.stderr).toContain('✗ SOURCE_SELECT_DENIED');
      const finding = JSON.parse(result.stdout).findings.find(
        (f: { code: string }) => f.code === 'SOURCE_SELECT_DENIED',
      );
      expect(finding).toMatchObject({
        severity: 'error',
        objects: ['public.secrets'],
        fix: 'GRANT SELECT ON "public"."secrets" TO "copier";',
      });
    });

    it('copy fails with PERMISSION_DENIED naming the table, before creating a slot', async () => {
      const result = await copy(copierSource, uris.target);
      expect(result.code).toBe(4);
      expectExplained(result, 'PERMISSION_DENIED', 'public.secrets');
      expect(result.stderr).toContain('GRANT SELECT ON "public"."secrets" TO "copier";');
      expect(await leftovers(uris)).toEqual({ slots: [], publications: [], stateRows: 0, targetTables: [] });
    });
  });

  it('an invalid --migration-id is a configuration error (exit 2) that shows the value', async () => {
    const uris = await freshDatabases(pair, 'badid');
    const result = await copy(uris.source, uris.target, ['--migration-id', 'Bad-Id', '--json']);
    expect(result.code).toBe(2);
    expectExplained(result, 'CONFIG_INVALID_MIGRATION_ID', "'Bad-Id'");
    expect(JSON.parse(result.stdout)).toMatchObject({
      ok: false,
      error: { code: 'CONFIG_INVALID_MIGRATION_ID' },
    });
    expect(await leftovers(uris)).toEqual({ slots: [], publications: [], stateRows: 0, targetTables: [] });
  });

  it('a slot already taken by this migration id fails with SLOT_ALREADY_EXISTS and is left alone', async () => {
    const uris = await freshDatabases(pair, 'taken');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY)');
    await query(
      uris.source,
      `SELECT pg_create_logical_replication_slot('pg_live_migrate_default', 'pgoutput')`,
    );
    try {
      const result = await copy(uris.source, uris.target);
      expect(result.code).toBe(4);
      expectExplained(result, 'SLOT_ALREADY_EXISTS', "'pg_live_migrate_default'");
      expect(result.stderr).toContain('clean --migration-id default');
      expect(await leftovers(uris)).toEqual({
        slots: ['pg_live_migrate_default'],
        publications: [],
        stateRows: 0,
        targetTables: [],
      });
    } finally {
      await query(uris.source, `SELECT pg_drop_replication_slot('pg_live_migrate_default')`);
    }
  });

  it('an unknown option is a configuration error (exit 2) naming the option', async () => {
    const result = await runCli(['copy', '--sauce', 'tomato']);
    expect(result.code).toBe(2);
    expectExplained(result, 'CONFIG_INVALID_OPTION', '--sauce');
  });

  it('a missing source is a configuration error (exit 2) that says how to pass one', async () => {
    const result = await runCli(['preflight', '--target', pair.target.uri()], {
      env: { SOURCE: undefined, PGCOPYDB_SOURCE_PGURI: undefined },
    });
    expect(result.code).toBe(2);
    expectExplained(result, 'CONFIG_MISSING_SOURCE', 'No source connection string');
  });
});
