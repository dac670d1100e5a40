// SQL generation for replayed changes: grouping (multi-row INSERT, COPY runs), the WHERE of each replica
// identity, unchanged TOAST, truncate flags, idempotent upserts and quoting. Pure: the catalog is a plain map.
import { describe, expect, it } from 'vitest';
import {
  type ApplyStatement,
  BATCH_MIN_ROWS,
  buildApplySql,
  COPY_MIN_ROWS,
  encodeCopyValue,
  type TargetTable,
} from '../../../src/core/apply-sql';
import type { Change, RelationRef } from '../../../src/core/changes';

const orders: RelationRef = { schema: 'public', name: 'orders' };
const lines: RelationRef = { schema: 'public', name: 'lines' };
const keyless: RelationRef = { schema: 'select', name: 'no key' };
const hostile: RelationRef = { schema: 'Mixed "Case"', name: 'Quote"d table' };

const TABLES: Record<string, TargetTable> = {
  orders: { writable: new Set(['id', 'note', 'body']), key: ['id'] },
  lines: { writable: new Set(['order_id', 'line', 'qty']), key: ['order_id', 'line'] },
  // `total` is a stored generated column: not writable.
  'no key': { writable: new Set(['a', 'b', 'c']), key: [] },
  'Quote"d table': { writable: new Set(['or"der', 'select']), key: ['or"der'] },
};
const catalog = (rel: RelationRef): TargetTable => {
  const table = TABLES[rel.name];
  if (!table) throw new Error(`no table ${rel.name}`);
  return table;
};

const sqlOf = (changes: Change[], idempotent = false): string[] =>
  buildApplySql(changes, catalog, { idempotent }).map((s) => s.sql);

const insert = (rel: RelationRef, values: Record<string, string | null>): Change => ({
  kind: 'insert',
  rel,
  values,
});

describe('buildApplySql: inserts', () => {
  it('groups consecutive inserts into one table with the same columns into one multi-row INSERT', () => {
    expect(
      sqlOf([
        insert(orders, { id: '1', note: 'a' }),
        insert(orders, { id: '2', note: null }),
        insert(orders, { id: '3', note: 'c' }),
      ]),
    ).toEqual([
      `INSERT INTO "public"."orders" ("id", "note") OVERRIDING SYSTEM VALUE VALUES ('1', 'a'), ('2', NULL), ('3', 'c')`,
    ]);
  });

  it('starts a new INSERT when the table or the column list changes, and keeps the order of changes', () => {
    expect(
      sqlOf([
        insert(orders, { id: '1', note: 'a' }),
        insert(lines, { order_id: '1', line: '1', qty: '5' }),
        insert(orders, { id: '2' }),
        insert(orders, { id: '3', note: 'c' }),
        { kind: 'delete', rel: orders, key: { id: '1' }, old: null },
        insert(orders, { id: '4', note: 'd' }),
      ]),
    ).toEqual([
      `INSERT INTO "public"."orders" ("id", "note") OVERRIDING SYSTEM VALUE VALUES ('1', 'a')`,
      `INSERT INTO "public"."lines" ("order_id", "line", "qty") OVERRIDING SYSTEM VALUE VALUES ('1', '1', '5')`,
      `INSERT INTO "public"."orders" ("id") OVERRIDING SYSTEM VALUE VALUES ('2')`,
      `INSERT INTO "public"."orders" ("id", "note") OVERRIDING SYSTEM VALUE VALUES ('3', 'c')`,
      `DELETE FROM ONLY "public"."orders" WHERE "id" = '1'`,
      `INSERT INTO "public"."orders" ("id", "note") OVERRIDING SYSTEM VALUE VALUES ('4', 'd')`,
    ]);
  });

  it('leaves out columns the target computes (generated) or does not have', () => {
    expect(sqlOf([insert(keyless, { a: '1', b: 'x', c: null, total: '42' })])).toEqual([
      `INSERT INTO "select"."no key" ("a", "b", "c") OVERRIDING SYSTEM VALUE VALUES ('1', 'x', NULL)`,
    ]);
  });

  it('writes identity values as given (OVERRIDING SYSTEM VALUE) and expects no row count', () => {
    const [statement] = buildApplySql([insert(orders, { id: '7', note: 'x' })], catalog);
    expect(statement?.sql).toContain('OVERRIDING SYSTEM VALUE');
    expect(statement?.expectOneRow).toBeUndefined();
  });
});

describe('buildApplySql: runs of inserts through COPY', () => {
  const rows = (n: number, first = 1) =>
    Array.from({ length: n }, (_, i) => insert(orders, { id: String(first + i), note: `n${first + i}` }));

  it(`sends a run of ${COPY_MIN_ROWS} or more inserts into one table as one COPY, rows in order`, () => {
    const [statement, ...rest] = buildApplySql(rows(COPY_MIN_ROWS), catalog);
    expect(rest).toEqual([]);
    expect(statement).toEqual<ApplyStatement>({
      sql: 'COPY "public"."orders" ("id", "note") FROM STDIN',
      copy: {
        rows: COPY_MIN_ROWS,
        data: Array.from({ length: COPY_MIN_ROWS }, (_, i) => `${i + 1}\tn${i + 1}\n`).join(''),
      },
    });
  });

  it('keeps shorter runs as INSERT and splits runs at other changes', () => {
    const statements = buildApplySql(
      [
        ...rows(COPY_MIN_ROWS - 1),
        { kind: 'delete', rel: orders, key: { id: '1' }, old: null },
        ...rows(COPY_MIN_ROWS, 100),
      ],
      catalog,
    );
    expect(statements.map((s) => s.sql.split(' (')[0])).toEqual([
      'INSERT INTO "public"."orders"',
      'DELETE FROM ONLY "public"."orders" WHERE "id" = \'1\'',
      'COPY "public"."orders"',
    ]);
  });

  it('escapes backslashes, tabs, newlines and carriage returns, and writes NULL as \\N', () => {
    expect(encodeCopyValue(null)).toBe('\\N');
    expect(encodeCopyValue(undefined)).toBe('\\N');
    expect(encodeCopyValue('\\N')).toBe('\\\\N');
    expect(encodeCopyValue('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(encodeCopyValue('\\.')).toBe('\\\\.');
    expect(encodeCopyValue('')).toBe('');
  });

  // Inserts as the replay receives them: each row already a COPY line, written back to back in one block.
  const encoded = (n: number, columns: readonly string[], first = 1) => {
    const text = Array.from({ length: n }, (_, i) => `${first + i}\tn\\t${first + i}\n`).join('');
    const block = Buffer.from(`ignored\n${text}`);
    let at = 'ignored\n'.length;
    return Array.from({ length: n }, (_, i): Change => {
      const end = at + Buffer.byteLength(`${first + i}\tn\\t${first + i}\n`);
      const copy = { buffer: block, start: at, end, columns };
      at = end;
      return {
        kind: 'insert',
        rel: orders,
        values: { id: String(first + i), note: `n\t${first + i}` },
        copy,
      };
    });
  };

  it('sends runs of inserts that arrive as COPY lines as those lines, adjacent ones as one slice', () => {
    const columns = ['id', 'note'];
    const changes = encoded(COPY_MIN_ROWS, columns);
    const [statement, ...rest] = buildApplySql(changes, catalog);
    expect(rest).toEqual([]);
    expect(statement?.sql).toBe('COPY "public"."orders" ("id", "note") FROM STDIN');
    const data = statement?.copy?.data as Buffer[];
    expect(Array.isArray(data)).toBe(true);
    expect(data).toHaveLength(1);
    expect(Buffer.concat(data).toString()).toBe(
      Array.from({ length: COPY_MIN_ROWS }, (_, i) => `${i + 1}\tn\\t${i + 1}\n`).join(''),
    );
    // Lines in two blocks: one slice per block, in order.
    const two = [...encoded(COPY_MIN_ROWS, columns), ...encoded(2, columns, 50)];
    const chunks = buildApplySql(two, catalog)[0]?.copy?.data as Buffer[];
    expect(chunks.map((c) => c.toString().split('\n').length - 1)).toEqual([COPY_MIN_ROWS, 2]);
  });

  it('writes a run from its values when a row has no line, a line of another layout, or a column the target does not write', () => {
    const columns = ['id', 'note'];
    const mixed = [...encoded(COPY_MIN_ROWS - 1, columns), insert(orders, { id: '99', note: 'x' })];
    expect(buildApplySql(mixed, catalog)[0]?.copy?.data).toBe(
      `${Array.from({ length: COPY_MIN_ROWS - 1 }, (_, i) => `${i + 1}\tn\\t${i + 1}\n`).join('')}99\tx\n`,
    );
    // Same names from another Relation message (a TimescaleDB chunk of the same hypertable): still lines.
    const relayout = [...encoded(4, columns), ...encoded(4, ['id', 'note'], 10)];
    expect(Array.isArray(buildApplySql(relayout, catalog)[0]?.copy?.data)).toBe(true);
    // Other names or another order: written from the values.
    const reordered = [...encoded(4, columns), ...encoded(4, ['note', 'id'], 10)];
    expect(typeof buildApplySql(reordered, catalog)[0]?.copy?.data).toBe('string');
    // The target does not write `total` (generated there): the line cannot be sent as it is.
    const generated = encoded(COPY_MIN_ROWS, ['id', 'note', 'total']).map((c) => ({
      ...(c as Extract<Change, { kind: 'insert' }>),
      values: { ...(c as Extract<Change, { kind: 'insert' }>).values, total: '3' },
    }));
    const [statement] = buildApplySql(generated, catalog);
    expect(statement?.sql).toBe('COPY "public"."orders" ("id", "note") FROM STDIN');
    expect(typeof statement?.copy?.data).toBe('string');
  });

  it('keeps idempotent runs as upserts (COPY cannot skip conflicts)', () => {
    const statements = buildApplySql(rows(COPY_MIN_ROWS + 2), catalog, { idempotent: true });
    expect(statements).toHaveLength(1);
    expect(statements[0]?.copy).toBeUndefined();
    expect(statements[0]?.sql).toMatch(
      /^INSERT INTO .* ON CONFLICT \("id"\) DO UPDATE SET "note" = EXCLUDED."note"$/,
    );
  });
});

describe('buildApplySql: updates and deletes', () => {
  it('finds the row by its key from the new values when the key did not change', () => {
    const [statement] = buildApplySql(
      [{ kind: 'update', rel: orders, key: null, old: null, values: { id: '5', note: 'new', body: 'b' } }],
      catalog,
    );
    expect(statement).toEqual<ApplyStatement>({
      sql: `UPDATE ONLY "public"."orders" SET "id" = '5', "note" = 'new', "body" = 'b' WHERE "id" = '5'`,
      expectOneRow: { table: 'public.orders', key: 'id=5' },
    });
  });

  it('uses the old key for the WHERE of a primary-key change (replica identity DEFAULT or USING INDEX)', () => {
    expect(
      sqlOf([
        {
          kind: 'update',
          rel: lines,
          key: { order_id: '1', line: '2' },
          old: null,
          values: { order_id: '1', line: '3', qty: '9' },
        },
      ]),
    ).toEqual([
      `UPDATE ONLY "public"."lines" SET "order_id" = '1', "line" = '3', "qty" = '9' WHERE "order_id" = '1' AND "line" = '2'`,
    ]);
  });

  it('uses the key columns of the old row under REPLICA IDENTITY FULL when the table has a key', () => {
    expect(
      sqlOf([
        {
          kind: 'update',
          rel: orders,
          key: null,
          old: { id: '1', note: 'old', body: 'x' },
          values: { id: '2', note: 'new', body: 'x' },
        },
        { kind: 'delete', rel: orders, key: null, old: { id: '2', note: 'new', body: 'x' } },
      ]),
    ).toEqual([
      `UPDATE ONLY "public"."orders" SET "id" = '2', "note" = 'new', "body" = 'x' WHERE "id" = '1'`,
      `DELETE FROM ONLY "public"."orders" WHERE "id" = '2'`,
    ]);
  });

  it('matches one whole old row by ctid on a keyless REPLICA IDENTITY FULL table, NULLs with IS NULL', () => {
    const old = { a: '1', b: null, c: '{"x": 1}' };
    const statements = buildApplySql(
      [
        { kind: 'update', rel: keyless, key: null, old, values: { a: '2', b: null, c: '{"x": 1}' } },
        { kind: 'delete', rel: keyless, key: null, old },
      ],
      catalog,
    );
    const match = `WHERE ctid = (SELECT ctid FROM ONLY "select"."no key" WHERE "a"::text = '1' AND "b" IS NULL AND "c"::text = '{"x": 1}' LIMIT 1)`;
    expect(statements.map((s) => s.sql)).toEqual([
      `UPDATE ONLY "select"."no key" SET "a" = '2', "b" = NULL, "c" = '{"x": 1}' ${match}`,
      `DELETE FROM ONLY "select"."no key" ${match}`,
    ]);
    // Exactly one of the duplicates is changed, and a miss means the copies diverged.
    for (const statement of statements) expect(statement.expectOneRow?.table).toBe('select.no key');
  });

  it('leaves a generated column out of the whole-row match', () => {
    expect(
      sqlOf([{ kind: 'delete', rel: keyless, key: null, old: { a: '1', b: 'x', c: null, total: '9' } }]),
    ).toEqual([
      `DELETE FROM ONLY "select"."no key" WHERE ctid = (SELECT ctid FROM ONLY "select"."no key" WHERE "a"::text = '1' AND "b"::text = 'x' AND "c" IS NULL LIMIT 1)`,
    ]);
  });

  it('skips an unchanged TOASTed column in the SET (its value stays as it is on the target)', () => {
    expect(
      sqlOf([
        {
          kind: 'update',
          rel: orders,
          key: null,
          old: null,
          values: { id: '1', note: 'n', body: undefined },
        },
      ]),
    ).toEqual([`UPDATE ONLY "public"."orders" SET "id" = '1', "note" = 'n' WHERE "id" = '1'`]);
  });

  it('writes nothing for an update whose every column is unchanged TOAST or generated', () => {
    expect(
      sqlOf([
        { kind: 'update', rel: keyless, key: null, old: { a: '1' }, values: { total: '1', a: undefined } },
      ]),
    ).toEqual([]);
  });

  it('deletes by the key the source sent', () => {
    const [statement] = buildApplySql(
      [{ kind: 'delete', rel: lines, key: { order_id: '4', line: '1' }, old: null }],
      catalog,
    );
    expect(statement).toEqual<ApplyStatement>({
      sql: `DELETE FROM ONLY "public"."lines" WHERE "order_id" = '4' AND "line" = '1'`,
      expectOneRow: { table: 'public.lines', key: 'order_id=4, line=1' },
    });
  });
});

describe('buildApplySql: truncate', () => {
  it('truncates every listed table ONLY, with RESTART IDENTITY and CASCADE as the source did', () => {
    expect(
      sqlOf([
        { kind: 'truncate', rels: [orders, lines], cascade: true, restartIdentity: true },
        { kind: 'truncate', rels: [keyless], cascade: false, restartIdentity: false },
        { kind: 'truncate', rels: [orders], cascade: true, restartIdentity: false },
        { kind: 'truncate', rels: [orders], cascade: false, restartIdentity: true },
      ]),
    ).toEqual([
      'TRUNCATE ONLY "public"."orders", ONLY "public"."lines" RESTART IDENTITY CASCADE',
      'TRUNCATE ONLY "select"."no key"',
      'TRUNCATE ONLY "public"."orders" CASCADE',
      'TRUNCATE ONLY "public"."orders" RESTART IDENTITY',
    ]);
  });

  it('reaches a TimescaleDB hypertable without ONLY, once, and leaves a lone chunk truncate to the cutover', () => {
    const hypertable: RelationRef = { schema: 'public', name: 'orders', via: 'hypertable' };
    const chunk: RelationRef = { schema: 'public', name: 'orders', via: 'chunk' };
    expect(
      sqlOf([
        // TRUNCATE of the hypertable on the source: the hypertable and each chunk, all routed to it.
        { kind: 'truncate', rels: [hypertable, chunk, chunk], cascade: false, restartIdentity: false },
        // One chunk truncated on its own: applied to the hypertable it would empty every chunk.
        { kind: 'truncate', rels: [chunk], cascade: false, restartIdentity: false },
        { kind: 'truncate', rels: [chunk, lines], cascade: false, restartIdentity: false },
      ]),
    ).toEqual(['TRUNCATE "public"."orders"', 'TRUNCATE ONLY "public"."lines"']);
  });

  it('updates and deletes through a hypertable without ONLY; one of identical keyless rows without a ctid', () => {
    const hypertable: RelationRef = { schema: 'select', name: 'no key', via: 'chunk' };
    const old = { a: '1', b: null, c: 'x' };
    const match = '"a"::text = \'1\' AND "b" IS NULL AND "c"::text = \'x\'';
    const cols = '"a", "b", "c"';
    expect(
      sqlOf([
        { kind: 'delete', rel: { ...orders, via: 'chunk' }, key: { id: '1' }, old: null },
        { kind: 'delete', rel: hypertable, key: null, old },
        { kind: 'update', rel: hypertable, key: null, old, values: { a: '2', b: null, c: undefined } },
      ]),
    ).toEqual([
      'DELETE FROM "public"."orders" WHERE "id" = \'1\'',
      `WITH gone AS (DELETE FROM "select"."no key" WHERE ${match} RETURNING *), back AS (INSERT INTO "select"."no key" (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM gone OFFSET 1) SELECT 1 FROM gone LIMIT 1`,
      `WITH gone AS (DELETE FROM "select"."no key" WHERE ${match} RETURNING *), back AS (INSERT INTO "select"."no key" (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM gone OFFSET 1), moved AS (INSERT INTO "select"."no key" (${cols}) OVERRIDING SYSTEM VALUE SELECT '2'::text, NULL, g."c" FROM (SELECT * FROM gone LIMIT 1) AS g) SELECT 1 FROM gone LIMIT 1`,
    ]);
  });

  it('flushes pending inserts before a truncate', () => {
    expect(
      sqlOf([
        insert(orders, { id: '1' }),
        { kind: 'truncate', rels: [orders], cascade: false, restartIdentity: false },
        insert(orders, { id: '1' }),
      ]),
    ).toEqual([
      `INSERT INTO "public"."orders" ("id") OVERRIDING SYSTEM VALUE VALUES ('1')`,
      'TRUNCATE ONLY "public"."orders"',
      `INSERT INTO "public"."orders" ("id") OVERRIDING SYSTEM VALUE VALUES ('1')`,
    ]);
  });
});

describe('buildApplySql: idempotent mode (resume from a fresh snapshot)', () => {
  it('turns inserts into upserts on the key, and into DO NOTHING when every column is a key column', () => {
    expect(
      sqlOf(
        [
          insert(orders, { id: '1', note: 'a' }),
          insert(orders, { id: '2', note: 'b' }),
          insert(lines, { order_id: '1', line: '1' }),
        ],
        true,
      ),
    ).toEqual([
      `INSERT INTO "public"."orders" ("id", "note") OVERRIDING SYSTEM VALUE VALUES ('1', 'a'), ('2', 'b') ON CONFLICT ("id") DO UPDATE SET "note" = EXCLUDED."note"`,
      `INSERT INTO "public"."lines" ("order_id", "line") OVERRIDING SYSTEM VALUE VALUES ('1', '1') ON CONFLICT ("order_id", "line") DO NOTHING`,
    ]);
  });

  it('does not require updates and deletes to find their row', () => {
    const statements = buildApplySql(
      [
        { kind: 'update', rel: orders, key: null, old: null, values: { id: '1', note: 'x' } },
        { kind: 'delete', rel: orders, key: { id: '1' }, old: null },
      ],
      catalog,
      { idempotent: true },
    );
    expect(statements).toHaveLength(2);
    for (const statement of statements) expect(statement.expectOneRow).toBeUndefined();
  });

  it('replays a key change so that it converges whether the row sits under its old or its new key', () => {
    const moved = [
      `DELETE FROM ONLY "public"."orders" WHERE "id" = '1' AND EXISTS (SELECT 1 FROM ONLY "public"."orders" WHERE "id" = '2')`,
      `UPDATE ONLY "public"."orders" SET "id" = '2', "note" = 'x' WHERE "id" = '1'`,
      `UPDATE ONLY "public"."orders" SET "note" = 'x' WHERE "id" = '2'`,
    ];
    // The old key as the key tuple (replica identity DEFAULT) …
    expect(
      sqlOf(
        [{ kind: 'update', rel: orders, key: { id: '1' }, old: null, values: { id: '2', note: 'x' } }],
        true,
      ),
    ).toEqual(moved);
    // … or inside the whole old row (REPLICA IDENTITY FULL on a table with a key).
    expect(
      sqlOf(
        [
          {
            kind: 'update',
            rel: orders,
            key: null,
            old: { id: '1', note: 'o' },
            values: { id: '2', note: 'x' },
          },
        ],
        true,
      ),
    ).toEqual(moved);
  });

  it('never deletes the row of an update whose old key equals its new key', () => {
    for (const change of [
      { kind: 'update', rel: orders, key: { id: '1' }, old: null, values: { id: '1', note: 'x' } },
      { kind: 'update', rel: orders, key: null, old: { id: '1', note: 'o' }, values: { id: '1', note: 'x' } },
    ] as Change[]) {
      expect(sqlOf([change], true)).toEqual([
        `UPDATE ONLY "public"."orders" SET "id" = '1', "note" = 'x' WHERE "id" = '1'`,
      ]);
    }
  });

  it('adds no ON CONFLICT to a keyless table (there is nothing to conflict on)', () => {
    expect(sqlOf([insert(keyless, { a: '1' })], true)).toEqual([
      `INSERT INTO "select"."no key" ("a") OVERRIDING SYSTEM VALUE VALUES ('1')`,
    ]);
  });
});

describe('buildApplySql: quoting', () => {
  it('quotes identifiers with double quotes and values as literals, backslashes and newlines kept verbatim', () => {
    const value = `it's a "test" \\N back\\slash\nnew line; DROP TABLE x; --`;
    expect(
      sqlOf([
        insert(hostile, { 'or"der': '1', select: value }),
        { kind: 'update', rel: hostile, key: { 'or"der': "1'" }, old: null, values: { select: null } },
      ]),
    ).toEqual([
      `INSERT INTO "Mixed ""Case"""."Quote""d table" ("or""der", "select") OVERRIDING SYSTEM VALUE VALUES ('1', 'it''s a "test" \\N back\\slash\nnew line; DROP TABLE x; --')`,
      `UPDATE ONLY "Mixed ""Case"""."Quote""d table" SET "select" = NULL WHERE "or""der" = '1'''`,
    ]);
  });
});

describe('buildApplySql: runs of updates and deletes batched over unnest', () => {
  const typed: TargetTable = {
    writable: new Set(['or"der', 'select', 'at']),
    key: ['or"der'],
    typeNames: new Map([
      ['or"der', 'integer'],
      ['select', 'text'],
      ['at', 'timestamp with time zone'],
    ]),
    plainArrays: new Set(['or"der', 'select', 'at']),
  };
  const typedCatalog = (): TargetTable => typed;
  const update = (id: number, select: string | null): Change => ({
    kind: 'update',
    rel: hostile,
    key: null,
    old: null,
    values: { 'or"der': String(id), select, at: '2024-01-01 00:00:00.000001+00' },
  });
  const remove = (id: number): Change => ({
    kind: 'delete',
    rel: hostile,
    key: { 'or"der': String(id) },
    old: null,
  });
  const ids = Array.from({ length: BATCH_MIN_ROWS }, (_, i) => i + 1);

  it(`sends ${BATCH_MIN_ROWS} updates of distinct keys as one UPDATE with one array per column, values untouched`, () => {
    const statements = buildApplySql(
      ids.map((id) => update(id, id === 2 ? null : `it's "x", {y}\\ ${id}`)),
      typedCatalog,
    );
    expect(statements).toHaveLength(1);
    const [statement] = statements as [ApplyStatement];
    expect(statement.sql).toBe(
      `UPDATE ONLY "Mixed ""Case"""."Quote""d table" AS t SET "select" = v."select", "at" = v."at" FROM unnest($1::integer[], $2::text[], $3::timestamp with time zone[]) AS v("or""der", "select", "at") WHERE t."or""der" = v."or""der"`,
    );
    expect(statement.params?.[0]).toBe(`{${ids.map((id) => `"${id}"`).join(',')}}`);
    // Quoted whole, `"` and `\\` escaped, NULL unquoted: the array literal the target reads back as the values.
    expect(statement.params?.[1]?.startsWith(`{"it's \\"x\\", {y}\\\\ 1",NULL,"it's`)).toBe(true);
    expect(statement.expectRows).toEqual({ table: 'Mixed "Case".Quote"d table', count: BATCH_MIN_ROWS });
  });

  it('passes arrays, composites and domains as text[] and casts them (unnest would flatten or expand them)', () => {
    const withArrays: TargetTable = {
      writable: new Set(['k1', 'k2', 'tags']),
      key: ['k1', 'k2'],
      typeNames: new Map([
        ['k1', 'integer[]'],
        ['k2', 'text'],
        ['tags', 'text[]'],
      ]),
      plainArrays: new Set(['k2']),
    };
    const changes = ids.map(
      (id): Change => ({
        kind: 'update',
        rel: hostile,
        key: null,
        old: null,
        values: { k1: `{${id}}`, k2: 'a', tags: '{x,"y z"}' },
      }),
    );
    expect(buildApplySql(changes, () => withArrays)[0]?.sql).toBe(
      `UPDATE ONLY "Mixed ""Case"""."Quote""d table" AS t SET "tags" = v."tags"::text[] FROM unnest($1::text[], $2::text[], $3::text[]) AS v("k1", "k2", "tags") WHERE t."k1" = v."k1"::integer[] AND t."k2" = v."k2"`,
    );
    // Deletes by a key of two columns join the arrays too.
    const removes = ids.map(
      (id): Change => ({ kind: 'delete', rel: hostile, key: { k1: `{${id}}`, k2: 'a' }, old: null }),
    );
    expect(buildApplySql(removes, () => withArrays)[0]?.sql).toBe(
      `DELETE FROM ONLY "Mixed ""Case"""."Quote""d table" AS t USING unnest($1::text[], $2::text[]) AS v("k1", "k2") WHERE t."k1" = v."k1"::integer[] AND t."k2" = v."k2"`,
    );
  });

  it(`sends ${BATCH_MIN_ROWS} deletes by a one-column key as one DELETE … = ANY(array), and shorter runs row by row`, () => {
    const [batched] = buildApplySql(ids.map(remove), typedCatalog) as [ApplyStatement];
    expect(batched.sql).toBe(
      `DELETE FROM ONLY "Mixed ""Case"""."Quote""d table" AS t WHERE t."or""der" = ANY($1::integer[])`,
    );
    expect(batched.expectRows).toEqual({ table: 'Mixed "Case".Quote"d table', count: BATCH_MIN_ROWS });
    expect(batched.params).toEqual([`{${ids.map((id) => `"${id}"`).join(',')}}`]);
    const short = buildApplySql(ids.slice(1).map(remove), typedCatalog);
    expect(short).toHaveLength(BATCH_MIN_ROWS - 1);
    expect(short.every((s) => s.params === undefined)).toBe(true);
  });

  it('applies updates row by row, in source order, when a unique index besides the key could collide', () => {
    const guarded = { ...typed, uniqueBeyondKey: true };
    const statements = buildApplySql(
      ids.map((id) => update(id, 'a')),
      () => guarded,
    );
    expect(statements).toHaveLength(BATCH_MIN_ROWS);
    expect(statements.every((s) => s.params === undefined)).toBe(true);
    // Deletes cannot collide: still one statement.
    expect(buildApplySql(ids.map(remove), () => guarded)).toHaveLength(1);
  });

  it('ends a run at a repeated key, so no statement changes a row twice', () => {
    const statements = buildApplySql([...ids.map((id) => update(id, 'a')), update(1, 'b')], typedCatalog);
    expect(statements).toHaveLength(2);
    expect(statements[0]?.params?.[0]).toBe(`{${ids.map((id) => `"${id}"`).join(',')}}`);
    expect(statements[1]?.sql).toMatch(/^UPDATE ONLY .* WHERE "or""der" = '1'$/);
  });
});
