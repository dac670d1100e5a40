// Post-data (indexes, constraints, triggers …) with pg_restore. A big table's own indexes and key
// constraints are built as soon as its last part is copied, while other tables are still copying
// (as pg_restore -j and pgcopydb do); everything else, and anything not built yet, runs at the end with
// -j. Objects that already exist on the target are left out, so a crash in the middle resumes cleanly.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { withClient } from '../adapters/postgres/client';
import {
  listToc,
  readRestoreSql,
  restoreParallel,
  type TocEntry,
  type ToolContext,
} from '../adapters/postgres/pg-tools';
import { tableKey } from '../core/plan';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';

const BUILDS = ['INDEX', 'CONSTRAINT', 'FK CONSTRAINT', 'TRIGGER', 'RULE', 'POLICY'];

/** Names of post-data objects already on the target, as "schema name" / "schema table name" keys. */
async function readExisting(client: pg.Client): Promise<Set<string>> {
  const { rows } = await client.query(
    `SELECT n.nspname || ' ' || c.relname AS key FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I')
     UNION ALL
     SELECT n.nspname || ' ' || r.relname || ' ' || con.conname FROM pg_constraint con JOIN pg_class r ON r.oid = con.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
     UNION ALL
     SELECT n.nspname || ' ' || r.relname || ' ' || t.tgname FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace WHERE NOT t.tgisinternal
     UNION ALL
     SELECT schemaname || ' ' || tablename || ' ' || rulename FROM pg_rules
     UNION ALL
     SELECT schemaname || ' ' || tablename || ' ' || policyname FROM pg_policies`,
  );
  return new Set(rows.map((r) => r.key as string));
}

/** Which table each index and key constraint of the dump belongs to (read on the source, in the snapshot). */
export async function readPostDataOwners(source: pg.Client): Promise<Map<string, string>> {
  const { rows } = await source.query(
    `SELECT n.nspname || ' ' || i.relname AS entry, n.nspname AS schema, t.relname AS name
       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace WHERE t.relkind = 'r'
     UNION ALL
     SELECT n.nspname || ' ' || t.relname || ' ' || c.conname, n.nspname, t.relname
       FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE t.relkind = 'r' AND c.contype IN ('p', 'u', 'x')`,
  );
  return new Map(rows.map((r) => [r.entry as string, tableKey({ schema: r.schema, name: r.name })]));
}

export interface PostDataPlan {
  /** Runs a table's own index and key builds now (call when its last part is copied). */
  tableCopied(table: string): void;
  /** Waits for the early builds, then restores everything still missing with -j. */
  finish(): Promise<void>;
}

export async function planPostData(
  ctx: WorkflowContext,
  tools: ToolContext,
  endpoints: Endpoints,
  o: {
    file: string;
    noOwner: boolean;
    jobs: number;
    workDir: string;
    owners: Map<string, string>;
    /** Tables worth an early build (big ones: a pg_restore process per small table costs more than it saves). */
    earlyTables: Set<string>;
    /**
     * TimescaleDB hypertables (tableKey). pg_dump writes `ALTER TABLE ONLY` for constraints, which
     * TimescaleDB refuses on a hypertable: their constraints are run here without ONLY, so that they
     * reach the chunks too.
     */
    hypertables?: Set<string>;
  },
): Promise<PostDataPlan> {
  const toc = await listToc(tools, o.file, 'post-data');
  const byTable = new Map<string, TocEntry[]>();
  for (const entry of toc) {
    if (entry.type !== 'INDEX' && entry.type !== 'CONSTRAINT') continue;
    const table = o.owners.get(`${entry.schema} ${entry.name}`);
    if (table === undefined || !o.earlyTables.has(table)) continue;
    byTable.set(table, [...(byTable.get(table) ?? []), entry]);
  }
  const running: Promise<void>[] = [];
  let failure: unknown;
  let active = 0;
  const waiting: (() => void)[] = [];
  const restoreList = async (name: string, entries: TocEntry[], jobs: number) => {
    const existing = await withClient(endpoints.target, readExisting);
    const keep = entries.filter((e) => !(BUILDS.includes(e.type) && existing.has(`${e.schema} ${e.name}`)));
    const skipped = entries.length - keep.length;
    if (keep.length === 0) return skipped;
    const listFile = join(o.workDir, `${name}.list`);
    await writeFile(listFile, `${keep.map((e) => e.line).join('\n')}\n`);
    await restoreParallel(tools, endpoints.target, {
      file: o.file,
      section: 'post-data',
      noOwner: o.noOwner,
      jobs,
      listFile,
    });
    return skipped;
  };
  const runWithoutOnly = async (name: string, entries: TocEntry[]) => {
    const existing = await withClient(endpoints.target, readExisting);
    const keep = entries.filter((e) => !existing.has(`${e.schema} ${e.name}`));
    if (keep.length === 0) return;
    const listFile = join(o.workDir, `${name}.list`);
    await writeFile(listFile, `${keep.map((e) => e.line).join('\n')}\n`);
    const sql = await readRestoreSql(tools, {
      file: o.file,
      section: 'post-data',
      noOwner: o.noOwner,
      listFile,
    });
    await withClient(endpoints.target, (client) =>
      client.query(sql.replace(/^ALTER TABLE ONLY /gm, 'ALTER TABLE ')),
    );
  };
  let early = 0;
  return {
    tableCopied(table) {
      const entries = byTable.get(table);
      if (!entries || failure) return;
      byTable.delete(table);
      early += 1;
      const name = `post-data-early-${early}`;
      running.push(
        (async () => {
          // At most `jobs` early builds at once, next to the copy workers.
          if (active >= o.jobs) await new Promise<void>((resolve) => waiting.push(resolve));
          active += 1;
          try {
            await restoreList(name, entries, 1);
          } catch (error) {
            failure ??= error;
          } finally {
            active -= 1;
            waiting.shift()?.();
          }
        })(),
      );
    },
    async finish() {
      await Promise.all(running);
      if (failure) throw failure;
      if (early)
        ctx.emit({
          type: 'log',
          level: 'info',
          message: `post-data: ${early} tables had their indexes built during the copy.`,
        });
      const onHypertable = (e: TocEntry) =>
        (e.type === 'CONSTRAINT' || e.type === 'FK CONSTRAINT') &&
        Boolean(o.hypertables?.has(tableKey({ schema: e.schema, name: e.name.split(' ')[0] ?? '' })));
      // Keys first (foreign keys elsewhere may reference them), foreign keys of hypertables last.
      const keys = toc.filter((e) => onHypertable(e) && e.type === 'CONSTRAINT');
      const foreign = toc.filter((e) => onHypertable(e) && e.type === 'FK CONSTRAINT');
      await runWithoutOnly('post-data-hypertable-keys', keys);
      const skipped = await restoreList(
        'post-data',
        toc.filter((e) => !onHypertable(e)),
        o.jobs,
      );
      await runWithoutOnly('post-data-hypertable-fks', foreign);
      if (skipped) {
        ctx.emit({
          type: 'log',
          level: 'info',
          message: `post-data: ${skipped} objects already on the target are skipped.`,
        });
      }
    },
  };
}
