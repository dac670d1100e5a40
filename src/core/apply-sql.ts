// SQL for replayed changes. Values arrive as the source's text forms and are written as quoted literals
// (untyped, so PostgreSQL coerces them to each target column's type); many statements are sent in one
// simple-query round trip, which is what makes replay fast without server-side prepared statements.
import type { Change, ColumnValue, RelationRef, Row } from './changes';
import { quoteIdent, quoteLiteral, quoteQualified } from './sql';

export interface TargetTable {
  /** Columns that exist on the target and can be written (not generated). */
  writable: ReadonlySet<string>;
  /** Key columns to find a row by: primary key or replica identity index; empty = whole-row match. */
  key: readonly string[];
}

export type TargetCatalog = (rel: RelationRef) => TargetTable;

const literal = (value: ColumnValue): string =>
  value === null || value === undefined ? 'NULL' : quoteLiteral(value);

/** Idempotent mode (resume with a fresh snapshot): inserts become upserts, misses are not errors. */
export interface ApplyMode {
  idempotent: boolean;
}

function whereClause(
  rel: RelationRef,
  table: TargetTable,
  key: Row | null,
  old: Row | null,
  values: Row | null,
): string {
  if (old && table.key.length === 0) {
    // REPLICA IDENTITY FULL without a key: match the whole old row on its text form (works for types
    // without an equality operator), one row only, since duplicates are indistinguishable.
    const conditions = Object.entries(old).flatMap(([column, value]) => {
      if (value === undefined || !table.writable.has(column)) return [];
      return value === null
        ? [`${quoteIdent(column)} IS NULL`]
        : [`${quoteIdent(column)}::text = ${quoteLiteral(value)}`];
    });
    const predicate = conditions.length ? conditions.join(' AND ') : 'true';
    return ` WHERE ctid = (SELECT ctid FROM ONLY ${quoteQualified(rel)} WHERE ${predicate} LIMIT 1)`;
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

function insertColumns(table: TargetTable, values: Row): string[] {
  return Object.keys(values).filter((c) => values[c] !== undefined && table.writable.has(c));
}

export interface ApplyStatement {
  sql: string;
  /** UPDATE/DELETE of one row: the target must find it (else the copies diverged). */
  expectOneRow?: { table: string; key: string };
  /** A COPY … FROM STDIN statement: its rows in COPY's text format, and how many. */
  copy?: { data: string; rows: number };
}

/** Runs of at least this many inserts into one table go through COPY, which the server parses far faster. */
export const COPY_MIN_ROWS = 8;

/** One value in COPY's text format: backslash escapes for the four special characters, \N for NULL. */
export function encodeCopyValue(value: ColumnValue): string {
  if (value === null || value === undefined) return '\\N';
  return value.replace(/[\\\t\n\r]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  );
}

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
  let pending: { rel: RelationRef; columns: string[]; rows: string[]; values: Row[] } | undefined;
  const flush = () => {
    if (!pending) return;
    const table = catalog(pending.rel);
    const cols = pending.columns.map(quoteIdent).join(', ');
    if (!mode.idempotent && pending.values.length >= COPY_MIN_ROWS) {
      // COPY writes identity values as given (like OVERRIDING SYSTEM VALUE) and, under
      // session_replication_role = replica, fires no triggers: the same effect as the INSERT below.
      const columns = pending.columns;
      const data = pending.values
        .map((row) => `${columns.map((c) => encodeCopyValue(row[c])).join('\t')}\n`)
        .join('');
      out.push({
        sql: `COPY ${quoteQualified(pending.rel)} (${cols}) FROM STDIN`,
        copy: { data, rows: pending.values.length },
      });
      pending = undefined;
      return;
    }
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
      sql: `INSERT INTO ${quoteQualified(pending.rel)} (${cols}) OVERRIDING SYSTEM VALUE VALUES ${pending.rows.join(', ')}${conflict}`,
    });
    pending = undefined;
  };
  for (const change of changes) {
    if (change.kind === 'insert') {
      const table = catalog(change.rel);
      const columns = insertColumns(table, change.values);
      const row = `(${columns.map((c) => literal(change.values[c])).join(', ')})`;
      if (
        pending &&
        pending.rel.schema === change.rel.schema &&
        pending.rel.name === change.rel.name &&
        pending.columns.length === columns.length &&
        pending.columns.every((c, i) => c === columns[i])
      ) {
        pending.rows.push(row);
        pending.values.push(change.values);
      } else {
        flush();
        pending = { rel: change.rel, columns, rows: [row], values: [change.values] };
      }
      continue;
    }
    flush();
    if (change.kind === 'update') {
      const table = catalog(change.rel);
      const sets = Object.entries(change.values)
        .filter(([c, v]) => v !== undefined && table.writable.has(c))
        .map(([c, v]) => `${quoteIdent(c)} = ${literal(v)}`);
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
        const target = quoteQualified(change.rel);
        out.push({
          sql: `DELETE FROM ONLY ${target}${oldKey} AND EXISTS (SELECT 1 FROM ONLY ${target}${newKey})`,
        });
        out.push({ sql: `UPDATE ONLY ${target} SET ${sets.join(', ')}${oldKey}` });
        const nonKey = Object.entries(change.values)
          .filter(([c, v]) => v !== undefined && table.writable.has(c) && !table.key.includes(c))
          .map(([c, v]) => `${quoteIdent(c)} = ${literal(v)}`);
        if (nonKey.length) out.push({ sql: `UPDATE ONLY ${target} SET ${nonKey.join(', ')}${newKey}` });
        continue;
      }
      const statement: ApplyStatement = {
        sql: `UPDATE ONLY ${quoteQualified(change.rel)} SET ${sets.join(', ')}${whereClause(change.rel, table, change.key, change.old, change.values)}`,
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
        sql: `DELETE FROM ONLY ${quoteQualified(change.rel)}${whereClause(change.rel, table, change.key, change.old, null)}`,
      };
      if (!mode.idempotent) {
        statement.expectOneRow = {
          table: `${change.rel.schema}.${change.rel.name}`,
          key: describeKey(table, change.key, change.old, null),
        };
      }
      out.push(statement);
    } else {
      const names = change.rels.map((r) => `ONLY ${quoteQualified(r)}`).join(', ');
      out.push({
        sql: `TRUNCATE ${names}${change.restartIdentity ? ' RESTART IDENTITY' : ''}${change.cascade ? ' CASCADE' : ''}`,
      });
    }
  }
  flush();
  return out;
}
