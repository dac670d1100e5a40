// The target session that replays changes: triggers and foreign keys silenced, durable commits, and the
// applied position written in the same transaction as the changes (the exactly-once point).
import type pg from 'pg';
import type { ApplyStatement, TargetTable } from '../../core/apply-sql';
import type { RelationDef, RelationRef } from '../../core/changes';
import { MigrationError } from '../../core/errors';
import { quoteQualified } from '../../core/sql';
import { setCanonicalSession, sqlState } from './client';
import { CONTROL_SCHEMA } from './control-schema';

const S = `"${CONTROL_SCHEMA}"`;

export type TriggerMode = 'session_replication_role' | 'disabled_user_triggers';

/**
 * Prepares the apply session. session_replication_role = replica silences user triggers and foreign-key
 * checks (it needs superuser or, from PostgreSQL 15, a grant of SET on it); without it, user triggers of
 * the migrated tables are disabled now and restored at cutover (foreign keys then stay checked, which the
 * source's commit order satisfies).
 */
export async function prepareApplySession(client: pg.Client): Promise<TriggerMode> {
  await setCanonicalSession(client);
  // Durable commits: a position is acknowledged to the source only after this commit, so it must survive a
  // target crash even when the target's default is synchronous_commit = off.
  await client.query(
    'SET synchronous_commit = on; SET standard_conforming_strings = on; SET statement_timeout = 0',
  );
  try {
    await client.query('SET session_replication_role = replica');
    return 'session_replication_role';
  } catch (error) {
    if (sqlState(error) !== '42501') throw error;
    return 'disabled_user_triggers';
  }
}

/** Disables the user triggers of the tables (recorded, so cutover or clean can restore them). */
export async function disableUserTriggers(
  client: pg.Client,
  migrationId: string,
  tables: RelationRef[],
): Promise<number> {
  let count = 0;
  for (const table of tables) {
    const { rows } = await client.query(
      `SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2 AND NOT t.tgisinternal AND t.tgenabled <> 'D'`,
      [table.schema, table.name],
    );
    if (rows.length === 0) continue;
    await client.query('BEGIN');
    await client.query(`ALTER TABLE ${quoteQualified(table)} DISABLE TRIGGER USER`);
    for (const r of rows) {
      await client.query(
        `INSERT INTO ${S}.altered (migration_id, kind, table_schema, table_name, detail) VALUES ($1, 'trigger', $2, $3, $4)
         ON CONFLICT DO NOTHING`,
        [migrationId, table.schema, table.name, r.tgname],
      );
    }
    await client.query('COMMIT');
    count += rows.length;
  }
  return count;
}

/** Undoes what the replay changed on target tables (user triggers), as recorded. */
export async function restoreAltered(client: pg.Client, migrationId: string): Promise<number> {
  const { rows } = await client.query(
    `SELECT kind, table_schema, table_name, detail FROM ${S}.altered WHERE migration_id = $1 ORDER BY 1, 2, 3, 4`,
    [migrationId],
  );
  for (const r of rows) {
    const table = quoteQualified({ schema: r.table_schema, name: r.table_name });
    if (r.kind === 'trigger')
      await client.query(`ALTER TABLE ${table} ENABLE TRIGGER "${String(r.detail).replaceAll('"', '""')}"`);
  }
  await client.query(`DELETE FROM ${S}.altered WHERE migration_id = $1`, [migrationId]);
  return rows.length;
}

export interface TargetColumns extends TargetTable {
  /** Type OID per writable column (built-in types have the same OID on every cluster). */
  types: ReadonlyMap<string, number>;
}

/** The target table's writable columns, key and column types, to apply to and to check Relation messages against. */
export async function readTargetColumns(
  client: pg.Client,
  rel: RelationRef,
): Promise<TargetColumns | undefined> {
  const { rows } = await client.query(
    `SELECT a.attname::text AS name, a.atttypid::int AS type, a.attgenerated <> '' AS generated,
            coalesce(a.attnum = ANY(pk.indkey::int2[]), false) AS in_pk, pk.indkey::int2[] AS pk_order,
            coalesce(a.attnum = ANY(ri.indkey::int2[]), false) AS in_ri, ri.indkey::int2[] AS ri_order, a.attnum
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
       LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
      ORDER BY a.attnum`,
    [rel.schema, rel.name],
  );
  if (rows.length === 0) return undefined;
  const writable = rows.filter((r) => !r.generated);
  const ordered = (flag: 'in_pk' | 'in_ri', order: 'pk_order' | 'ri_order') => {
    const keyRows = rows.filter((r) => r[flag]);
    const positions: number[] = (keyRows[0]?.[order] as number[] | undefined) ?? [];
    return [...keyRows]
      .sort((a, b) => positions.indexOf(a.attnum) - positions.indexOf(b.attnum))
      .map((r) => r.name as string);
  };
  const pk = ordered('in_pk', 'pk_order');
  return {
    writable: new Set(writable.map((r) => r.name as string)),
    key: pk.length ? pk : ordered('in_ri', 'ri_order'),
    types: new Map(writable.map((r) => [r.name as string, r.type as number])),
  };
}

/** Why a Relation message does not fit the target table, or undefined when it does. */
export function describeRelationMismatch(
  rel: RelationDef,
  target: TargetColumns | undefined,
): string | undefined {
  const name = `${rel.schema}.${rel.name}`;
  if (!target) return `table ${name} does not exist on the target`;
  const sourceColumns = new Set(rel.columns.map((c) => c.name));
  const added = rel.columns.filter((c) => !target.writable.has(c.name)).map((c) => c.name);
  if (added.length)
    return `table ${name} has column(s) ${added.join(', ')} on the source but not on the target`;
  const dropped = [...target.writable].filter((c) => !sourceColumns.has(c));
  if (dropped.length) return `table ${name} no longer has column(s) ${dropped.join(', ')} on the source`;
  for (const column of rel.columns) {
    const targetType = target.types.get(column.name);
    // Built-in types share OIDs across clusters; user types (enums, domains …) are compared by name elsewhere.
    if (
      column.typeOid < 16384 &&
      targetType !== undefined &&
      targetType < 16384 &&
      targetType !== column.typeOid
    ) {
      return `column ${name}.${column.name} changed type on the source (type oid ${column.typeOid}, target ${targetType})`;
    }
  }
  return undefined;
}

/** Runs statements in one round trip and checks that every single-row UPDATE/DELETE found its row. */
export async function applyStatements(client: pg.Client, statements: ApplyStatement[]): Promise<number> {
  if (statements.length === 0) return 0;
  const result = await client.query(statements.map((s) => s.sql).join(';\n'));
  const results = Array.isArray(result) ? result : [result];
  let rows = 0;
  statements.forEach((statement, i) => {
    const count = results[i]?.rowCount ?? 0;
    rows += count;
    if (statement.expectOneRow && count !== 1) {
      throw new MigrationError(
        'REPLAY_ROW_NOT_FOUND',
        `A replayed change found ${count} rows on the target for ${statement.expectOneRow.table} (${statement.expectOneRow.key}); source and target have diverged.`,
        'Something changed the target outside the migration, or the copy was incomplete. Nothing of this transaction was applied. Run validate --checksum to find the differences, fix the target row, then resume.',
      );
    }
  });
  return rows;
}

/** Commits the open group with its position: both or neither survive. */
export async function commitGroup(
  client: pg.Client,
  migrationId: string,
  position: { endLsn: string; commitTime: Date | null; column: 'applied_lsn' | 'spooled_lsn' },
): Promise<void> {
  await client.query(
    `UPDATE ${S}.replay SET ${position.column} = $2::pg_lsn, last_commit_time = coalesce($3, last_commit_time) WHERE migration_id = $1`,
    [migrationId, position.endLsn, position.commitTime],
  );
  await client.query('COMMIT');
}
