import { describe, expect, it } from 'vitest';
import {
  buildCopyInSql,
  buildCopyOutSql,
  buildCopyPlan,
  buildPublicationSets,
  splitRange,
  type TableInfo,
  tableKey,
} from '../../../src/core/plan';

const table = (overrides: Partial<TableInfo>): TableInfo => ({
  schema: 'public',
  name: 't',
  kind: 'table',
  unlogged: false,
  isPartition: false,
  columns: ['id', 'v'],
  allColumns: ['id', 'v'],
  primaryKey: ['id'],
  replicaIdentity: 'default',
  hasReplicaIdentity: true,
  integerKey: 'id',
  bytes: 1000,
  pages: 1,
  ...overrides,
});

describe('buildCopyPlan', () => {
  it('copies small tables whole and largest first', () => {
    const plan = buildCopyPlan([table({ name: 'small', bytes: 10 }), table({ name: 'big', bytes: 500 })], {
      splitBytes: 1000,
      keyBounds: new Map(),
    });
    expect(plan.map((p) => [p.name, p.rangeKind, p.partId])).toEqual([
      ['big', 'all', 1],
      ['small', 'all', 2],
    ]);
  });

  it('splits a big table with an integer key into contiguous key ranges, open at both ends', () => {
    const big = table({ name: 'big', bytes: 3500 });
    const plan = buildCopyPlan([big], {
      splitBytes: 1000,
      keyBounds: new Map([[tableKey(big), { min: 1n, max: 400n }]]),
    });
    expect(plan).toHaveLength(4);
    expect(plan.map((p) => [p.rangeFrom, p.rangeTo])).toEqual([
      [null, '101'],
      ['101', '201'],
      ['201', '301'],
      ['301', null],
    ]);
    expect(plan.every((p) => p.rangeKind === 'key' && p.partCount === 4)).toBe(true);
  });

  it('splits a big table without an integer key by ctid page ranges, the last one open', () => {
    const big = table({ name: 'big', bytes: 2500, integerKey: null, pages: 300 });
    const plan = buildCopyPlan([big], { splitBytes: 1000, keyBounds: new Map() });
    expect(plan.map((p) => [p.rangeKind, p.rangeFrom, p.rangeTo])).toEqual([
      ['ctid', null, '100'],
      ['ctid', '100', '200'],
      ['ctid', '200', null],
    ]);
  });

  it('never splits when the threshold is 0, and skips partitioned parents and foreign tables', () => {
    const plan = buildCopyPlan(
      [
        table({ bytes: 10 ** 12 }),
        table({ name: 'parent', kind: 'partitioned' }),
        table({ name: 'f', kind: 'foreign' }),
      ],
      { splitBytes: 0, keyBounds: new Map() },
    );
    expect(plan.map((p) => [p.name, p.rangeKind])).toEqual([['t', 'all']]);
  });
});

describe('splitRange', () => {
  it('covers the whole interval without gaps or overlaps', () => {
    const ranges = splitRange(7n, 1000n, 7);
    expect(ranges[0]?.[0]).toBe(7n);
    expect(ranges.at(-1)?.[1]).toBe(1000n);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]?.[0]).toBe(ranges[i - 1]?.[1]);
  });
});

describe('COPY statements', () => {
  const onlyPart = (t: TableInfo) => {
    const [part] = buildCopyPlan([t], { splitBytes: 0, keyBounds: new Map() });
    if (!part) throw new Error('no part planned');
    return part;
  };

  it('quotes every identifier and selects a key range with ONLY', () => {
    const part = {
      ...onlyPart(table({ schema: 'My "S"', name: 'select' })),
      rangeKind: 'key' as const,
      rangeColumn: 'id',
      rangeFrom: '10',
      rangeTo: '20',
    };
    expect(buildCopyOutSql(part, ['id', 'a b'])).toBe(
      'COPY (SELECT "id", "a b" FROM ONLY "My ""S"""."select" WHERE "id" >= 10 AND "id" < 20) TO STDOUT',
    );
    expect(buildCopyInSql(part, ['id', 'a b'])).toBe('COPY "My ""S"""."select" ("id", "a b") FROM STDIN');
  });

  it('leaves the column list out when every column is generated', () => {
    expect(buildCopyOutSql(onlyPart(table({ columns: [] })), [])).toBe('COPY "public"."t" TO STDOUT');
  });

  it('refuses a range bound that is not an integer', () => {
    const part = onlyPart(table({}));
    expect(() =>
      buildCopyOutSql(
        { ...part, rangeKind: 'key', rangeColumn: 'id', rangeFrom: '1; DROP TABLE x', rangeTo: null },
        ['id'],
      ),
    ).toThrow();
  });
});

describe('buildPublicationSets', () => {
  it('publishes tables without replica identity for INSERT/TRUNCATE only, and leaves out unlogged and parents', () => {
    const sets = buildPublicationSets([
      table({ name: 'keyed' }),
      table({ name: 'full', primaryKey: null, replicaIdentity: 'full', hasReplicaIdentity: true }),
      table({ name: 'keyless', primaryKey: null, hasReplicaIdentity: false }),
      table({ name: 'scratch', unlogged: true }),
      table({ name: 'parent', kind: 'partitioned' }),
    ]);
    expect(sets.full.map((t) => t.name)).toEqual(['keyed', 'full']);
    expect(sets.insertOnly.map((t) => t.name)).toEqual(['keyless']);
  });
});
