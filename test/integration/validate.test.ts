import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateOptions } from '../../src/config/options';
import type { MigrationEvent } from '../../src/core/events';
import { createRedactor } from '../../src/core/redact';
import type { TableValidation } from '../../src/core/validation';
import { systemClock, type WorkflowContext } from '../../src/ports';
import { resolveEndpoints } from '../../src/workflows/connections';
import { LIVE_SOURCE_WARNING, runValidate, type ValidateTuning } from '../../src/workflows/validate';
import { assertNoLeaks, freshDatabases, type Pair, query, startPair } from '../helpers/clusters';

// The same tables on both sides; the target declares `items` with its columns in another physical order.
const schema = (reordered: boolean) => `
  CREATE TABLE items (${reordered ? 'price numeric, name text, id int PRIMARY KEY' : 'id int PRIMARY KEY, name text, price numeric'});
  CREATE TABLE keyless (a int, b text);
  CREATE TABLE by_identity (a int NOT NULL, b int NOT NULL, v text);
  CREATE UNIQUE INDEX by_identity_ab ON by_identity (a, b);
  ALTER TABLE by_identity REPLICA IDENTITY USING INDEX by_identity_ab;
  CREATE TABLE "Mixed ""Case"" | pipe" (k text PRIMARY KEY, v jsonb);
`;
const data = `
  INSERT INTO items (id, name, price) SELECT g, 'name ' || g, g * 1.5 FROM generate_series(1, 1000) g;
  INSERT INTO keyless VALUES (1, 'dup'), (1, 'dup'), (2, NULL), (NULL, NULL);
  INSERT INTO by_identity SELECT g, g + 1, 'v' || g FROM generate_series(1, 50) g;
  INSERT INTO "Mixed ""Case"" | pipe" VALUES (E'tab\\there', '{"é": [1, null]}'), ('😀', 'null');
`;

describe('runValidate against real clusters', () => {
  let pair: Pair;
  let events: MigrationEvent[];

  beforeAll(async () => {
    pair = await startPair();
  });

  afterAll(async () => {
    await assertNoLeaks(pair);
    await pair.stop();
  });

  const context = (signal = new AbortController().signal): WorkflowContext => {
    events = [];
    return {
      emit: (event) => events.push(event),
      clock: systemClock,
      redactor: createRedactor(),
      env: process.env,
      stopSignal: signal,
    };
  };

  async function databases(name: string, extraTarget = '') {
    const uris = await freshDatabases(pair, name);
    await query(uris.source, schema(false) + data);
    await query(uris.target, schema(true) + data + extraTarget);
    return uris;
  }

  async function validate(
    uris: { source: string; target: string },
    options: { checksum: boolean; buckets?: number } & ValidateTuning,
    signal?: AbortSignal,
  ) {
    const parsed = validateOptions.parse({
      ...uris,
      dir: '/tmp/plm-validate-test',
      checksum: options.checksum,
    });
    const ctx = context(signal);
    return runValidate(ctx, resolveEndpoints(uris, ctx.redactor), { ...parsed, ...options });
  }

  const byName = (tables: TableValidation[], name: string) => tables.find((t) => t.name === name);

  it('passes identical tables even when the target stores the columns in another order', async () => {
    const uris = await databases('same');
    const report = await validate(uris, { checksum: true });
    expect(report.ok).toBe(true);
    expect(report.tables.map((t) => t.name)).toEqual([
      'Mixed "Case" | pipe',
      'by_identity',
      'items',
      'keyless',
    ]);
    for (const t of report.tables) expect(t).toMatchObject({ ok: true, checksumMatch: true });
    expect(byName(report.tables, 'items')).toMatchObject({
      sourceRows: 1000,
      targetRows: 1000,
      keyColumns: ['id'],
    });
    expect(byName(report.tables, 'by_identity')?.keyColumns).toEqual(['a', 'b']);
    expect(byName(report.tables, 'keyless')).toMatchObject({ sourceRows: 4, keyColumns: null });
  });

  it('reads the source live without a migration snapshot, and says so', async () => {
    const uris = await databases('live');
    const report = await validate(uris, { checksum: false });
    expect(report).toMatchObject({ ok: true, sourceMode: 'live', checksum: false, buckets: null });
    expect(report.warnings).toEqual([LIVE_SOURCE_WARNING]);
    expect(events).toContainEqual({ type: 'log', level: 'warn', message: LIVE_SOURCE_WARNING });
    for (const t of report.tables) expect(t.checksumMatch).toBeNull();
  });

  it('narrows differences to key ranges and lists exactly the differing keys, across cursor batches', async () => {
    const uris = await databases(
      'differ',
      `UPDATE items SET name = 'changed' WHERE id = 500;
       DELETE FROM items WHERE id = 17;
       INSERT INTO items (id, name, price) VALUES (5000, 'new', 1);
       INSERT INTO keyless VALUES (1, 'dup');
       UPDATE by_identity SET v = 'changed' WHERE a = 2;
       UPDATE "Mixed ""Case"" | pipe" SET v = '{"é": [1, 0]}' WHERE k = E'tab\\there';`,
    );
    const report = await validate(uris, { checksum: true, batchRows: 7 });
    expect(report.ok).toBe(false);
    const items = byName(report.tables, 'items');
    expect(items).toMatchObject({ ok: false, checksumMatch: false, sourceRows: 1000, targetRows: 1000 });
    expect(items?.mismatchedRanges?.length).toBeGreaterThanOrEqual(1);
    expect(items?.mismatchedRanges?.length).toBeLessThanOrEqual(3);
    expect([...(items?.differences ?? [])].sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: '17', kind: 'missing-on-target' },
      { key: '500', kind: 'content-differs' },
      { key: '5000', kind: 'extra-on-target' },
    ]);
    expect(byName(report.tables, 'keyless')).toMatchObject({
      sourceRows: 4,
      targetRows: 5,
      differences: [{ key: '(1,dup)', kind: 'extra-on-target' }],
    });
    expect(byName(report.tables, 'by_identity')?.differences).toEqual([
      { key: '(2,3)', kind: 'content-differs' },
    ]);
    expect(byName(report.tables, 'Mixed "Case" | pipe')?.firstDifferingKeys).toEqual(['tab\there']);
  });

  it('lists at most the first ten differing keys of a table, in key order', async () => {
    const uris = await databases('many', 'DELETE FROM items WHERE id > 100;');
    const report = await validate(uris, { checksum: true, buckets: 4 });
    const items = byName(report.tables, 'items');
    expect(items?.targetRows).toBe(100);
    expect(items?.mismatchedRanges).toHaveLength(4);
    expect(items?.differences).toHaveLength(10);
    // Key text order ('1000' < '101' < '102'), the same on both servers whatever their collation.
    expect(items?.firstDifferingKeys).toEqual([
      '1000',
      '101',
      '102',
      '103',
      '104',
      '105',
      '106',
      '107',
      '108',
      '109',
    ]);
  });

  it('reports a table missing on the target and a missing column as mismatches, not crashes', async () => {
    const uris = await databases('missing', `DROP TABLE keyless; ALTER TABLE items DROP COLUMN price;`);
    for (const checksum of [false, true]) {
      const report = await validate(uris, { checksum });
      expect(report.ok).toBe(false);
      expect(byName(report.tables, 'keyless')).toMatchObject({
        ok: false,
        sourceRows: 4,
        targetRows: null,
        problem: 'missing on the target',
        checksumMatch: checksum ? false : null,
      });
      expect(byName(report.tables, 'items')).toMatchObject({
        ok: false,
        sourceRows: 1000,
        targetRows: 1000,
        problem: 'column missing on the target: price',
      });
      expect(byName(report.tables, 'by_identity')?.ok).toBe(true);
    }
  });

  it('stops at a table boundary when asked and refuses to pass what it did not compare', async () => {
    const uris = await databases('stopped');
    const controller = new AbortController();
    controller.abort();
    await expect(validate(uris, { checksum: true }, controller.signal)).rejects.toMatchObject({
      code: 'VALIDATION_INTERRUPTED',
      message: expect.stringMatching(/stopped after 0 of 4 tables/),
    });
  });
});
