import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ValidationReport } from '../../src/core/validation';
import {
  checkAndStop,
  freshDatabases,
  type Pair,
  psqlFile,
  query,
  ROOT,
  runCli,
  startPair,
} from '../helpers/clusters';

const FIXTURE = join(ROOT, 'test/fixtures/hostile.sql');
// Text forms depend on these settings: both sides are read with the same ones.
const SESSION = `SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
  SET extra_float_digits = 1; SET bytea_output = 'hex';`;

describe('copy of hostile names and values through the CLI', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let common: string[];

  beforeAll(async () => {
    // Different server defaults on each side for every setting that changes text forms: the copy and
    // validate must not depend on them.
    pair = await startPair({
      source: {
        TimeZone: "'Pacific/Chatham'",
        DateStyle: "'SQL, DMY'",
        IntervalStyle: "'iso_8601'",
        extra_float_digits: 3,
        bytea_output: "'escape'",
      },
      target: {
        TimeZone: "'America/St_Johns'",
        DateStyle: "'German'",
        IntervalStyle: "'sql_standard'",
        extra_float_digits: -15,
      },
    });
    uris = await freshDatabases(pair, 'hostile');
    await psqlFile(pair.source, 'hostile', FIXTURE);
    common = ['--source', uris.source, '--target', uris.target, '--dir', `${pair.target.dataDir}-work`];
    const result = await runCli(['copy', ...common, '--table-jobs', '2', '--index-jobs', '2']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('copy done');
  });

  afterAll(async () => {
    await runCli(['clean', ...common, '--prune']);
    await rm(`${pair.target.dataDir}-work`, { recursive: true, force: true });
    await checkAndStop(pair);
  });

  const both = async (sql: string) =>
    Promise.all([query(uris.source, SESSION + sql), query(uris.target, SESSION + sql)]);

  it('passes validate --checksum for every hostile table', async () => {
    const result = await runCli(['validate', ...common, '--checksum', '--json']);
    const report = JSON.parse(result.stdout) as ValidationReport;
    const failing = report.tables.filter((t) => !t.ok);
    expect(failing, result.stderr).toEqual([]);
    expect(result.code).toBe(0);
    expect(report.tables.map((t) => `${t.schema}.${t.name}`).sort()).toEqual(
      [
        'Mixed Case.Quote"d table with spaces',
        'Mixed Case.all_generated',
        'Mixed Case.everything',
        'Mixed Case.generated',
        'Mixed Case.toasted',
        'select.2024 | "old"',
        'select.2024 | new',
        'select.keys',
        'select.no key',
        'select.table name of exactly sixty-three bytes, with spaces & "quotes"',
      ].sort(),
    );
    for (const t of report.tables) expect(t.checksumMatch, t.table).toBe(true);
    expect(report.tables.find((t) => t.name === 'no key')).toMatchObject({ sourceRows: 6, keyColumns: null });
    expect(result.stderr).toContain('Validation passed: 10 of 10 tables match');
  });

  it('keeps each tricky value identical in its text form', async () => {
    const columns = `n, n_fixed, r, d, ts, tsn, dt, tmtz, iv, j, jb, ia, ta, ba, t, ir, tr, e, c, ca, dm, st, u, bits`;
    for (const column of columns.split(', ')) {
      const sql = `SELECT id, ${column}::text AS v FROM "Mixed Case".everything ORDER BY id`;
      const [source, target] = await both(sql);
      expect(source).toHaveLength(5);
      expect(target, column).toEqual(source);
    }
    const [source] = await both(`SELECT r::text, d::text, n::text FROM "Mixed Case".everything WHERE id = 2`);
    expect(source).toEqual([{ r: 'NaN', d: 'Infinity', n: `0.${'0'.repeat(49)}1` }]);
  });

  it('keeps text with tabs, newlines, backslashes and carriage returns byte for byte', async () => {
    const [source, target] = await both(
      `SELECT encode(convert_to(t, 'UTF8'), 'hex') AS hex FROM "Mixed Case".everything WHERE id = 2`,
    );
    expect(target).toEqual(source);
    expect(Buffer.from(String(source[0]?.hex), 'hex').toString()).toBe(
      `tab\there\nnewline\\backslash\rreturn "double" 'single' \\N`,
    );
  });

  it('keeps TOASTed values, keyless duplicates and NULLs', async () => {
    const [toastSource, toastTarget] = await both(
      `SELECT id, octet_length(body) AS body, md5(body) AS h, md5(blob) AS b, md5(doc::text) AS d
         FROM "Mixed Case".toasted ORDER BY id`,
    );
    expect(toastTarget).toEqual(toastSource);
    expect(toastSource[0]?.body).toBe(128_000);
    const [keylessSource, keylessTarget] = await both(
      `SELECT t::text AS row, count(*)::int AS n FROM "select"."no key" t GROUP BY 1 ORDER BY 1`,
    );
    expect(keylessTarget).toEqual(keylessSource);
    expect(keylessSource).toContainEqual({ row: '(,,,)', n: 2 });
  });

  it('recomputes generated columns and continues the identity sequence after the copied maximum', async () => {
    const [source, target] = await both(
      `SELECT id, qty, total::text FROM "Mixed Case".generated ORDER BY id;`,
    );
    expect(target).toEqual(source);
    const [allSource, allTarget] = await both(`SELECT * FROM "Mixed Case".all_generated ORDER BY id`);
    expect(allTarget).toEqual(allSource);
    expect(allTarget[49]).toEqual({ id: 50, doubled: 100, label: 'row 50' });
    const [inserted] = await query<{ id: string; total: string }>(
      uris.target,
      `INSERT INTO "Mixed Case".generated (qty, price) VALUES (3, 2.50) RETURNING id::text, total::text`,
    );
    expect(inserted).toEqual({ id: '101', total: '7.50' });
  });

  it('keeps the 63-byte names and the partitions under their quoted names', async () => {
    const names = `SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, octet_length(c.relname) AS bytes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname IN ('select', 'Mixed Case') AND c.relkind IN ('r', 'p') ORDER BY 1, 2`;
    const [source, target] = await both(names);
    expect(target).toEqual(source);
    expect(source).toContainEqual({
      schema: 'select',
      name: 'table name of exactly sixty-three bytes, with spaces & "quotes"',
      kind: 'r',
      bytes: 63,
    });
    const [columns, targetColumns] = await both(
      `SELECT attname FROM pg_attribute WHERE attrelid = '"Mixed Case"."Quote""d table with spaces"'::regclass AND attnum > 0 ORDER BY attnum`,
    );
    expect(targetColumns).toEqual(columns);
    expect(columns.map((c) => c.attname)).toContain(`${'ü'.repeat(31)}x`);
  });

  // Runs last: it changes the target (the identity test above already added row 101 to `generated`).
  it('notices a one-microsecond change and names hostile composite keys exactly', async () => {
    await query(
      uris.target,
      `UPDATE "Mixed Case".everything SET ts = ts + interval '1 microsecond' WHERE id = 2;
       UPDATE "select".keys SET v = 30 WHERE k1 = E'tab\\there';`,
    );
    const result = await runCli(['validate', ...common, '--checksum', '--json']);
    expect(result.code).toBe(5);
    const report = JSON.parse(result.stdout) as ValidationReport;
    const failing = Object.fromEntries(
      report.tables.filter((t) => !t.ok).map((t) => [t.name, t.differences]),
    );
    expect(failing).toEqual({
      everything: [{ key: '2', kind: 'content-differs' }],
      keys: [{ key: '("tab\there","2024-01-01 00:00:00+00")', kind: 'content-differs' }],
      generated: [{ key: '101', kind: 'extra-on-target' }],
    });
    expect(result.stderr).toContain('(k1, k2) = ("tab\\there","2024-01-01 00:00:00+00"): content differs');
  });

  it('migrates only the schemas named with --schema, mixed case included', async () => {
    const db = await freshDatabases(pair, 'hostile_one_schema');
    await psqlFile(pair.source, 'hostile_one_schema', FIXTURE);
    const args = [
      '--source',
      db.source,
      '--target',
      db.target,
      '--dir',
      `${pair.target.dataDir}-one`,
      '--migration-id',
      'one',
    ];
    const copy = await runCli(['copy', ...args, '--schema', 'Mixed Case']);
    expect(copy.code, copy.stderr).toBe(0);
    const schemas = await query<{ s: string }>(
      db.target,
      `SELECT DISTINCT table_schema AS s FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema', '_pg_live_migrate') ORDER BY 1`,
    );
    expect(schemas).toEqual([{ s: 'Mixed Case' }]);
    const check = await runCli(['validate', '--checksum', '--json', ...args, '--schema', 'Mixed Case']);
    expect(check.code, check.stderr).toBe(0);
    expect(
      (JSON.parse(check.stdout) as ValidationReport).tables.every((t) => t.table.includes('Mixed Case')),
    ).toBe(true);
    await runCli(['clean', ...args, '--prune']);
    await rm(`${pair.target.dataDir}-one`, { recursive: true, force: true });
  });
});
