// SQL for replayed changes. Values arrive as the source's text forms. Runs of inserts go through COPY, runs of
// updates and deletes of distinct keys through one statement over unnest() of text[] parameters; the rest
// are single statements with quoted, untyped literals (PostgreSQL coerces them to each column's type), many
// per simple-query round trip. No server-side prepared statements: any mix of tables costs no parse cache.
import type { Change, ColumnValue, CopyRow, RelationRef, Row } from './changes';
import { quoteIdent, quoteLiteral, quoteQualified } from './sql';

export interface TargetTable {
  /** Columns that exist on the target and can be written (not generated). */
  writable: ReadonlySet<string>;
  /** Key columns to find a row by: primary key or replica identity index; empty = whole-row match. */
  key: readonly string[];
  /**
   * SQL type of each writable column without its modifier (format_type(oid, NULL)), to cast batched values
   * to: the assignment then applies the modifier and refuses what does not fit, as a single-row UPDATE
   * does. Absent = no batching.
   */
  typeNames?: ReadonlyMap<string, string>;
  /**
   * Columns whose batched values can travel as an array of the column's own type (read by the type's input
   * function, as a cast from text would be): not arrays, composites or domains, which travel as text[] and are
   * cast. Absent = all as text[].
   */
  plainArrays?: ReadonlySet<string>;
  /**
   * A unique or exclusion index besides the key's: a batched UPDATE applies its rows in the plan's order,
   * not the source's, and a non-deferrable index checked row by row could refuse an intermediate state.
   */
  uniqueBeyondKey?: boolean;
}

export type TargetCatalog = (rel: RelationRef) => TargetTable;

const literal = (value: ColumnValue): string =>
  value === null || value === undefined ? 'NULL' : quoteLiteral(value);

/** Idempotent mode (resume with a fresh snapshot): inserts become upserts, misses are not errors. */
export interface ApplyMode {
  idempotent: boolean;
}

/**
 * `ONLY ` for a plain table (inheritance children and partitions are replayed on their own); nothing for a
 * TimescaleDB hypertable, whose rows are in its chunks and whose changes arrive routed to it.
 */
const only = (rel: RelationRef) => (rel.via ? '' : 'ONLY ');

function whereClause(
  rel: RelationRef,
  table: TargetTable,
  key: Row | null,
  old: Row | null,
  values: Row | null,
): string {
  if (old && table.key.length === 0) {
    // REPLICA IDENTITY FULL without a key: match the whole old row, one row only, since duplicates are
    // indistinguishable. (Hypertables take wholeRowChange instead: compressed chunks have no ctid.)
    return ` WHERE ctid = (SELECT ctid FROM ONLY ${quoteQualified(rel)} WHERE ${wholeRowMatch(table, old)} LIMIT 1)`;
  }
  const source = key ?? old ?? values ?? {};
  const columns = table.key.length ? table.key : Object.keys(source);
  const conditions = columns.map((column) => {
    const value = source[column];
    return value === null || value === undefined
      ? `${quoteIdent(column)} IS NULL`
      : `${quoteIdent(column)} = ${quoteLiteral(value)}`;
  });
  return ` WHERE ${conditions.join(' AND ')}`;
}

/** The whole old row, matched on each column's text form (works for types without an equality operator). */
function wholeRowMatch(table: TargetTable, old: Row): string {
  const conditions = Object.entries(old).flatMap(([column, value]) => {
    if (value === undefined || !table.writable.has(column)) return [];
    return value === null
      ? [`${quoteIdent(column)} IS NULL`]
      : [`${quoteIdent(column)}::text = ${quoteLiteral(value)}`];
  });
  return conditions.length ? conditions.join(' AND ') : 'true';
}

/**
 * An UPDATE or DELETE of one of possibly identical rows of a keyless TimescaleDB hypertable (REPLICA
 * IDENTITY FULL). A ctid cannot pick one (compressed chunks have none), so every identical row is deleted,
 * all but one written back, and for an UPDATE the new row written: one statement, whose one result row says
 * a row was found.
 */
function wholeRowChange(rel: RelationRef, table: TargetTable, old: Row, values: Row | null): string {
  const target = quoteQualified(rel);
  const columns = [...table.writable];
  const list = columns.map(quoteIdent).join(', ');
  const types = table.typeNames ?? new Map<string, string>();
  const next = values
    ? `, moved AS (INSERT INTO ${target} (${list}) OVERRIDING SYSTEM VALUE SELECT ${columns
        .map((c) => {
          const value = values[c];
          if (value === undefined) return `g.${quoteIdent(c)}`;
          if (value === null) return 'NULL';
          return `${quoteLiteral(value)}::${types.get(c) ?? 'text'}`;
        })
        .join(', ')} FROM (SELECT * FROM gone LIMIT 1) AS g)`
    : '';
  return `WITH gone AS (DELETE FROM ${target} WHERE ${wholeRowMatch(table, old)} RETURNING *), back AS (INSERT INTO ${target} (${list}) OVERRIDING SYSTEM VALUE SELECT ${list} FROM gone OFFSET 1)${next} SELECT 1 FROM gone LIMIT 1`;
}

/** Whether a change writes `column` of its row: present, writable, and (with `notKey`) outside the key. */
const writes = (table: TargetTable, values: Row, column: string, notKey: boolean): boolean =>
  values[column] !== undefined && table.writable.has(column) && !(notKey && table.key.includes(column));

/** The columns a row writes, in its order (for an UPDATE's SET, `notKey`: the key's columns left out). */
function writtenColumns(table: TargetTable, values: Row, notKey = false): string[] {
  return Object.keys(values).filter((c) => writes(table, values, c, notKey));
}

/** Whether writtenColumns(table, values, notKey) would be exactly `columns`, without building the list. */
function writesExactly(columns: readonly string[], table: TargetTable, values: Row, notKey = false): boolean {
  let i = 0;
  for (const column in values) {
    if (!writes(table, values, column, notKey)) continue;
    if (columns[i] !== column) return false;
    i += 1;
  }
  return i === columns.length;
}

export interface ApplyStatement {
  sql: string;
  /** UPDATE/DELETE of one row: the target must find it (else the copies diverged). */
  expectOneRow?: { table: string; key: string };
  /** A COPY … FROM STDIN statement: its rows in COPY's text format (as text or as chunks), and how many. */
  copy?: { data: string | Buffer[]; rows: number };
  /** Parameters of a statement that is sent on its own: one array literal per column of a batched run. */
  params?: string[];
  /** A batched UPDATE/DELETE of distinct keys: it must touch exactly `count` rows. */
  expectRows?: { table: string; count: number };
}

/** Runs of at least this many updates or deletes of one table become one statement over unnest() arrays. */
export const BATCH_MIN_ROWS = 8;

/**
 * The end (exclusive) of the run of updates or deletes starting at `start` that can share one statement:
 * same table (with a key and known column types), same kind, for updates the same columns and no key
 * change, and no key twice (one statement can change a row only once).
 */
function batchRunEnd(changes: readonly Change[], start: number, catalog: TargetCatalog): number {
  const first = changes[start];
  if (!first || (first.kind !== 'update' && first.kind !== 'delete')) return start;
  const table = catalog(first.rel);
  if (!table.typeNames || table.key.length === 0) return start;
  if (first.kind === 'update' && table.uniqueBeyondKey) return start;
  const key = table.key;
  // Key values joined by NUL, which no PostgreSQL text value contains.
  const keyText = (row: Row | null | undefined): string | undefined => {
    let text = '';
    for (let i = 0; i < key.length; i++) {
      const value = row?.[key[i] as string];
      if (value === null || value === undefined) return undefined;
      text = i === 0 ? value : `${text}\u0000${value}`;
    }
    return text;
  };
  const keyOf = (c: Change): string | undefined => {
    if (c.kind === 'update') {
      const old = c.key ?? c.old;
      // A key change (or a FULL-identity old row that differs in the key) is not batched.
      if (old && key.some((k) => old[k] !== undefined && old[k] !== c.values[k])) return undefined;
      return keyText(c.values);
    }
    return c.kind === 'delete' ? keyText(c.key ?? c.old) : undefined;
  };
  const columns = first.kind === 'update' ? writtenColumns(table, first.values, true) : [];
  if (first.kind === 'update' && columns.length === 0) return start;
  const seen = new Set<string>();
  let end = start;
  for (; end < changes.length; end++) {
    const c = changes[end] as Change;
    if (c.kind !== first.kind) break;
    if (c.rel !== first.rel && (c.rel.schema !== first.rel.schema || c.rel.name !== first.rel.name)) break;
    if (c.kind === 'update' && !writesExactly(columns, table, c.values, true)) break;
    const k = keyOf(c);
    if (k === undefined || seen.has(k)) break;
    seen.add(k);
  }
  return end;
}

const ARRAY_SPECIAL = /["\\]/;
const ARRAY_SPECIALS = /["\\]/g;

/**
 * An array literal of text forms: every element double-quoted (so braces, commas, spaces and the word NULL
 * stay data), `"` and `\` backslash-escaped, SQL NULL as an unquoted NULL. Built here rather than by
 * node-postgres so that it is ready before the batch ahead of it has finished on the target.
 */
export function encodeArrayLiteral(values: readonly ColumnValue[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const value = values[i];
    if (value === null || value === undefined) out += 'NULL';
    else out += `"${ARRAY_SPECIAL.test(value) ? value.replace(ARRAY_SPECIALS, '\\$&') : value}"`;
  }
  return `${out}}`;
}

/**
 * One UPDATE … FROM unnest(…) or DELETE … USING unnest(…) for a run found by batchRunEnd. Each column's values
 * travel as one array parameter (an array literal of their text forms) and are cast to the column's type on
 * the target: the statement stays a few hundred bytes whatever the run's length, so the target parses and
 * plans it once, cheaply, and the planner knows the row count from the array.
 */
function buildBatch(run: readonly Change[], table: TargetTable, rel: RelationRef): ApplyStatement {
  const types = table.typeNames as ReadonlyMap<string, string>;
  const first = run[0] as Change;
  const target = `${quoteQualified(rel)} AS t`;
  const expectRows = { table: `${rel.schema}.${rel.name}`, count: run.length };
  const setColumns = first.kind === 'update' ? writtenColumns(table, first.values, true) : [];
  const all = [...table.key, ...setColumns];
  const params = all.map((column) =>
    encodeArrayLiteral(
      run.map((c) => {
        const row = c.kind === 'update' ? c.values : c.kind === 'delete' ? (c.key ?? c.old ?? {}) : {};
        return row[column] ?? null;
      }),
    ),
  );
  // An array of the column's own type is read by the type's input function, as a cast from text would be; the
  // rest travel as text[] and are cast (unnest would flatten arrays of arrays and expand composites).
  const typed = (column: string): string | undefined =>
    table.plainArrays?.has(column) ? types.get(column) : undefined;
  const key = table.key[0] as string;
  if (first.kind === 'delete' && table.key.length === 1 && typed(key)) {
    // One key column: an index scan over the array, no join (about a third cheaper on the target).
    return {
      sql: `DELETE FROM ${only(rel)}${target} WHERE t.${quoteIdent(key)} = ANY($1::${typed(key)}[])`,
      params,
      expectRows,
    };
  }
  const value = (column: string) => {
    const type = typed(column);
    return type ? `v.${quoteIdent(column)}` : `v.${quoteIdent(column)}::${types.get(column) ?? 'text'}`;
  };
  const match = table.key.map((k) => `t.${quoteIdent(k)} = ${value(k)}`).join(' AND ');
  const arrays = all.map((column, i) => `$${i + 1}::${typed(column) ?? 'text'}[]`).join(', ');
  const from = `unnest(${arrays}) AS v(${all.map(quoteIdent).join(', ')})`;
  if (first.kind === 'delete')
    return { sql: `DELETE FROM ${only(rel)}${target} USING ${from} WHERE ${match}`, params, expectRows };
  const sets = setColumns.map((k) => `${quoteIdent(k)} = ${value(k)}`).join(', ');
  return { sql: `UPDATE ${only(rel)}${target} SET ${sets} FROM ${from} WHERE ${match}`, params, expectRows };
}

/** Runs of at least this many inserts into one table go through COPY, which the server parses far faster. */
export const COPY_MIN_ROWS = 8;

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_SPECIALS = /[\\\t\n\r]/g;

/** One value in COPY's text format: backslash escapes for the four special characters, \N for NULL. */
export function encodeCopyValue(value: ColumnValue): string {
  if (value === null || value === undefined) return '\\N';
  if (!COPY_SPECIAL.test(value)) return value;
  return value.replace(COPY_SPECIALS, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  );
}

/** Rows in COPY's text format, one line each. */
function encodeCopyRows(columns: readonly string[], rows: readonly Row[]): string {
  let data = '';
  for (const row of rows) {
    for (let i = 0; i < columns.length; i++) {
      if (i > 0) data += '\t';
      data += encodeCopyValue(row[columns[i] as string]);
    }
    data += '\n';
  }
  return data;
}

type Insert = Extract<Change, { kind: 'insert' }>;

/** The COPY lines of inserts that all carry one, as slices (lines next to each other in a block share one). */
function copyLines(inserts: readonly Insert[]): Buffer[] {
  const chunks: Buffer[] = [];
  let block: Buffer | undefined;
  let start = 0;
  let end = 0;
  for (const insert of inserts) {
    const line = insert.copy as CopyRow;
    if (line.buffer === block && line.start === end) {
      end = line.end;
      continue;
    }
    if (block) chunks.push(block.subarray(start, end));
    block = line.buffer;
    start = line.start;
    end = line.end;
  }
  if (block) chunks.push(block.subarray(start, end));
  return chunks;
}

/**
 * Whether a COPY line has these columns, in this order: the same array for one Relation message (the usual
 * case), else compared by name (TimescaleDB chunks of one hypertable each have their own Relation message).
 */
const sameColumns = (columns: readonly string[] | undefined, expected: readonly string[]): boolean =>
  columns === expected ||
  (columns !== undefined &&
    columns.length === expected.length &&
    columns.every((column, i) => column === expected[i]));

/** Whether the target writes every column of a COPY line as it is (none missing, generated or dropped). */
const takesLine = (table: TargetTable, line: CopyRow | undefined): boolean =>
  line?.columns.every((column) => table.writable.has(column)) ?? false;

function describeKey(table: TargetTable, key: Row | null, old: Row | null, values: Row | null): string {
  const source = key ?? old ?? values ?? {};
  const columns = table.key.length ? table.key : Object.keys(source);
  return columns
    .map((c) => `${c}=${source[c] === null ? 'NULL' : String(source[c])}`)
    .join(', ')
    .slice(0, 200);
}

/**
 * Renders changes as SQL statements. Consecutive inserts into the same table with the same columns
 * become one multi-row INSERT.
 */
export function buildApplySql(
  changes: readonly Change[],
  catalog: TargetCatalog,
  mode: ApplyMode = { idempotent: false },
): ApplyStatement[] {
  const out: ApplyStatement[] = [];
  /**
   * A run of inserts into one table writing the same columns. `lines`: every one carries a COPY line with
   * these columns (compared by identity), all written by the target, so COPY can send the lines unread.
   */
  let pending:
    | {
        rel: RelationRef;
        table: TargetTable;
        columns: string[];
        inserts: Insert[];
        lines: readonly string[] | undefined;
      }
    | undefined;
  const flush = () => {
    if (!pending) return;
    const { table, columns, inserts } = pending;
    const cols = columns.map(quoteIdent).join(', ');
    if (!mode.idempotent && inserts.length >= COPY_MIN_ROWS) {
      // COPY writes identity values as given (like OVERRIDING SYSTEM VALUE) and, under
      // session_replication_role = replica, fires no triggers: the same effect as the INSERT below.
      const data = pending.lines
        ? copyLines(inserts)
        : encodeCopyRows(
            columns,
            inserts.map((i) => i.values),
          );
      out.push({
        sql: `COPY ${quoteQualified(pending.rel)} (${cols}) FROM STDIN`,
        copy: { data, rows: inserts.length },
      });
      pending = undefined;
      return;
    }
    const rows = inserts.map(({ values: row }) => `(${columns.map((c) => literal(row[c])).join(', ')})`);
    const conflict =
      mode.idempotent && table.key.length
        ? ` ON CONFLICT (${table.key.map(quoteIdent).join(', ')}) DO ${
            pending.columns.some((c) => !table.key.includes(c))
              ? `UPDATE SET ${pending.columns
                  .filter((c) => !table.key.includes(c))
                  .map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`)
                  .join(', ')}`
              : 'NOTHING'
          }`
        : '';
    out.push({
      sql: `INSERT INTO ${quoteQualified(pending.rel)} (${cols}) OVERRIDING SYSTEM VALUE VALUES ${rows.join(', ')}${conflict}`,
    });
    pending = undefined;
  };
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i] as Change;
    if (!mode.idempotent && (change.kind === 'update' || change.kind === 'delete')) {
      const end = batchRunEnd(changes, i, catalog);
      if (end - i >= BATCH_MIN_ROWS) {
        flush();
        out.push(buildBatch(changes.slice(i, end), catalog(change.rel), change.rel));
        i = end - 1;
        continue;
      }
    }
    if (change.kind === 'insert') {
      if (
        pending &&
        (pending.rel === change.rel ||
          (pending.rel.schema === change.rel.schema && pending.rel.name === change.rel.name))
      ) {
        if (pending.lines !== undefined && sameColumns(change.copy?.columns, pending.lines)) {
          pending.inserts.push(change);
          continue;
        }
        if (writesExactly(pending.columns, pending.table, change.values)) {
          // Same columns, but not as a line of the same layout: the run is written from its values.
          pending.inserts.push(change);
          pending.lines = undefined;
          continue;
        }
      }
      flush();
      const table = catalog(change.rel);
      const lines = takesLine(table, change.copy) ? change.copy?.columns : undefined;
      pending = {
        rel: change.rel,
        table,
        columns: lines ? [...lines] : writtenColumns(table, change.values),
        inserts: [change],
        lines,
      };
      continue;
    }
    flush();
    if ((change.kind === 'update' || change.kind === 'delete') && change.rel.via && change.old) {
      const table = catalog(change.rel);
      if (table.key.length === 0) {
        const statement: ApplyStatement = {
          sql: wholeRowChange(change.rel, table, change.old, change.kind === 'update' ? change.values : null),
        };
        if (!mode.idempotent) {
          statement.expectOneRow = {
            table: `${change.rel.schema}.${change.rel.name}`,
            key: describeKey(table, change.key, change.old, change.kind === 'update' ? change.values : null),
          };
        }
        out.push(statement);
        continue;
      }
    }
    if (change.kind === 'update') {
      const table = catalog(change.rel);
      const assign = (c: string) => `${quoteIdent(c)} = ${literal(change.values[c])}`;
      const sets = writtenColumns(table, change.values).map(assign);
      if (sets.length === 0) continue;
      // The old key arrives as `key` (replica identity DEFAULT or USING INDEX) or inside `old` (FULL); only a
      // real change of it counts (an unchanged key can be sent too, e.g. when it is stored out of line).
      const oldKeyRow = change.key ?? (table.key.length ? change.old : null);
      const keyChanged =
        oldKeyRow !== null &&
        table.key.some((c) => change.values[c] !== undefined && oldKeyRow[c] !== change.values[c]);
      if (mode.idempotent && keyChanged) {
        // A key change replayed onto rows copied from a later snapshot: the row may already sit under its
        // new key. Drop the stale old-key row in that case, move it if it is still under the old key, and
        // set the non-key columns under the new key either way: each step is harmless when it finds nothing.
        const oldKey = whereClause(change.rel, table, oldKeyRow, null, null);
        const newKey = whereClause(change.rel, table, null, null, change.values);
        const target = `${only(change.rel)}${quoteQualified(change.rel)}`;
        out.push({
          sql: `DELETE FROM ${target}${oldKey} AND EXISTS (SELECT 1 FROM ${target}${newKey})`,
        });
        out.push({ sql: `UPDATE ${target} SET ${sets.join(', ')}${oldKey}` });
        const nonKey = writtenColumns(table, change.values, true).map(assign);
        if (nonKey.length) out.push({ sql: `UPDATE ${target} SET ${nonKey.join(', ')}${newKey}` });
        continue;
      }
      const statement: ApplyStatement = {
        sql: `UPDATE ${only(change.rel)}${quoteQualified(change.rel)} SET ${sets.join(', ')}${whereClause(change.rel, table, change.key, change.old, change.values)}`,
      };
      if (!mode.idempotent) {
        statement.expectOneRow = {
          table: `${change.rel.schema}.${change.rel.name}`,
          key: describeKey(table, change.key, change.old, change.values),
        };
      }
      out.push(statement);
    } else if (change.kind === 'delete') {
      const table = catalog(change.rel);
      const statement: ApplyStatement = {
        sql: `DELETE FROM ${only(change.rel)}${quoteQualified(change.rel)}${whereClause(change.rel, table, change.key, change.old, null)}`,
      };
      if (!mode.idempotent) {
        statement.expectOneRow = {
          table: `${change.rel.schema}.${change.rel.name}`,
          key: describeKey(table, change.key, change.old, null),
        };
      }
      out.push(statement);
    } else {
      // A TimescaleDB TRUNCATE of a hypertable names it and each of its chunks: the hypertable is enough. A
      // chunk truncated on its own is not applied (it would empty the whole hypertable): the cutover's
      // comparison of every chunk finds it and copies it again.
      const rels = change.rels.filter((r) => r.via !== 'chunk');
      if (rels.length === 0) continue;
      const names = [...new Set(rels.map((r) => `${only(r)}${quoteQualified(r)}`))].join(', ');
      out.push({
        sql: `TRUNCATE ${names}${change.restartIdentity ? ' RESTART IDENTITY' : ''}${change.cascade ? ' CASCADE' : ''}`,
      });
    }
  }
  flush();
  return out;
}
