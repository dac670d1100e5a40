import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TableValidation, ValidationReport } from '../../src/core/validation';
import {
  checkAndStop,
  freshDatabases,
  loadPagila,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  waitFor,
} from '../helpers/clusters';

// Every table the copy copies (plain tables and leaf partitions) of pagila, as listTables sees them.
const COPIED_TABLES = `SELECT format('%s.%s', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1`;

describe('validate through the CLI', () => {
  let pair: Pair;

  beforeAll(async () => {
    pair = await startPair();
  });

  afterAll(async () => {
    await checkAndStop(pair);
  });

  async function copiedPagila(database: string, migrationId: string) {
    const uris = await freshDatabases(pair, database);
    await loadPagila(pair.source, database);
    const dir = `${pair.target.dataDir}-${database}`;
    const common = [
      '--source',
      uris.source,
      '--target',
      uris.target,
      '--dir',
      dir,
      '--migration-id',
      migrationId,
    ];
    return { uris, dir, common };
  }

  const copy = (common: string[]) => runCli(['copy', ...common, '--table-jobs', '2', '--index-jobs', '2']);
  const validate = async (common: string[], ...flags: string[]) => {
    const result = await runCli(['validate', ...common, '--json', ...flags]);
    return { ...result, report: JSON.parse(result.stdout) as ValidationReport };
  };
  const table = (report: ValidationReport, name: string) =>
    report.tables.find((t) => t.table === name) as TableValidation;

  describe('after a copy of pagila', () => {
    let ctx: Awaited<ReturnType<typeof copiedPagila>>;

    beforeAll(async () => {
      ctx = await copiedPagila('pagila', 'default');
      const result = await copy(ctx.common);
      expect(result.code, result.stderr).toBe(0);
    });

    afterAll(async () => {
      await runCli(['clean', ...ctx.common, '--prune']);
      await rm(ctx.dir, { recursive: true, force: true });
    });

    it('passes with checksums for every copied table, exits 0 and writes the Markdown summary', async () => {
      const markdown = `${ctx.dir}/summary/validation.md`;
      const { code, report, stderr } = await validate(ctx.common, '--checksum', '--markdown', markdown);
      expect(code, stderr).toBe(0);
      expect(report).toMatchObject({ ok: true, checksum: true, buckets: 16 });
      const expected = (await query<{ t: string }>(ctx.uris.source, COPIED_TABLES)).map((r) => r.t);
      expect(report.tables.map((t) => t.table).sort()).toEqual(expected);
      expect(expected).toContain('public.payment_p2022_01');
      for (const t of report.tables) {
        expect(t, t.table).toMatchObject({ checksumMatch: true, ok: true });
        expect(t.targetRows).toBe(t.sourceRows);
      }
      expect(table(report, 'public.rental').sourceRows).toBe(16044);
      expect(stderr).toMatch(/public\.rental\s+16,044\s+16,044 {2}✅/);
      expect(stderr).toContain(`Validation passed: ${expected.length} of ${expected.length} tables match`);
      const md = readFileSync(markdown, 'utf8');
      expect(md.split('\n')[0]).toMatch(/^### ✅ Validation passed/);
      expect(md).toContain('| `public.rental` | 16,044 | 16,044 | match | ✅ |');
    });

    it('fails with exit 5 after target changes and lists exactly the changed keys', async () => {
      const [first] = await query<{ actor_id: number; film_id: number }>(
        ctx.uris.target,
        'SELECT actor_id, film_id FROM public.film_actor ORDER BY 1, 2 LIMIT 1',
      );
      await query(
        ctx.uris.target,
        `UPDATE public.actor SET last_name = 'CHANGED' WHERE actor_id = 7;
         DELETE FROM public.film_actor WHERE actor_id = ${first?.actor_id} AND film_id = ${first?.film_id};`,
      );
      await query(ctx.uris.target, `INSERT INTO public.category (category_id, name) VALUES (99, 'Hostile')`);

      const { code, report, stderr } = await validate(ctx.common, '--checksum');
      expect(code).toBe(5);
      expect(report.ok).toBe(false);
      expect(report.tables.filter((t) => !t.ok).map((t) => t.table)).toEqual([
        'public.actor',
        'public.category',
        'public.film_actor',
      ]);
      expect(table(report, 'public.actor')).toMatchObject({
        checksumMatch: false,
        sourceRows: 200,
        targetRows: 200,
        firstDifferingKeys: ['7'],
        differences: [{ key: '7', kind: 'content-differs' }],
      });
      expect(table(report, 'public.film_actor')).toMatchObject({
        checksumMatch: false,
        differences: [{ key: `(${first?.actor_id},${first?.film_id})`, kind: 'missing-on-target' }],
      });
      expect(table(report, 'public.film_actor').targetRows).toBe(
        table(report, 'public.film_actor').sourceRows - 1,
      );
      expect(table(report, 'public.category')).toMatchObject({
        checksumMatch: false,
        firstDifferingKeys: ['99'],
        differences: [{ key: '99', kind: 'extra-on-target' }],
      });
      expect(stderr).toContain('    actor_id = 7: content differs');
      expect(stderr).toContain('Validation failed: 3 of');

      // Counts only: the delete and the insert show, the same-size update cannot.
      const counts = await validate(ctx.common);
      expect(counts.code).toBe(5);
      expect(counts.report.checksum).toBe(false);
      expect(counts.report.tables.filter((t) => !t.ok).map((t) => t.table)).toEqual([
        'public.category',
        'public.film_actor',
      ]);
      for (const t of counts.report.tables) expect(t.checksumMatch).toBeNull();
    });
  });

  describe('while `snapshot --hold` keeps the migration snapshot', () => {
    it('reads the source in that snapshot, so later source writes do not count as differences', async () => {
      const ctx = await copiedPagila('held', 'held');
      const holder = spawnCli(['snapshot', ...ctx.common, '--hold']);
      try {
        await waitFor(() => holder.output().stderr.includes('Exported snapshot'), {
          timeoutMs: 20_000,
          what: 'the snapshot to be exported',
        });
        const copied = await copy(ctx.common);
        expect(copied.code, copied.stderr).toBe(0);
        expect(copied.stderr).toContain('Using snapshot');
        await query(
          ctx.uris.source,
          `INSERT INTO public.actor (first_name, last_name) SELECT 'NEW', 'ACTOR ' || g FROM generate_series(1, 5) g;
           UPDATE public.category SET name = 'Changed later' WHERE category_id = 1;`,
        );

        const { code, report, stderr } = await validate(ctx.common, '--checksum');
        expect(code, stderr).toBe(0);
        expect(report).toMatchObject({ ok: true, sourceMode: 'snapshot', warnings: [] });
        expect(table(report, 'public.actor')).toMatchObject({
          sourceRows: 200,
          targetRows: 200,
          checksumMatch: true,
        });
        const [live] = await query<{ n: number }>(
          ctx.uris.source,
          'SELECT count(*)::int AS n FROM public.actor',
        );
        expect(live?.n).toBe(205);

        holder.child.kill('SIGTERM');
        const ended = await holder.result;
        expect(ended.code, ended.stderr).toBe(0);
        // The recorded snapshot died with its holder: validation now reads live and sees the new rows.
        const after = await validate(ctx.common, '--checksum');
        expect(after.code).toBe(5);
        expect(after.report.sourceMode).toBe('live');
        expect(after.report.tables.filter((t) => !t.ok).map((t) => t.table)).toEqual([
          'public.actor',
          'public.category',
        ]);
      } finally {
        holder.child.kill('SIGTERM');
        await holder.result;
        await runCli(['clean', ...ctx.common, '--prune']);
        await rm(ctx.dir, { recursive: true, force: true });
      }
    });
  });
});
