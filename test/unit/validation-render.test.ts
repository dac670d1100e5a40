import { describe, expect, it } from 'vitest';
import type { TableValidation, ValidationReport } from '../../src/core/validation';
import {
  escapeMarkdown,
  markdownCode,
  renderValidationMarkdown,
  renderValidationText,
} from '../../src/workflows/validate-render';

const table = (name: string, overrides: Partial<TableValidation> = {}): TableValidation => ({
  table: `public.${name}`,
  schema: 'public',
  name,
  sourceRows: 1200,
  targetRows: 1200,
  checksumMatch: true,
  ok: true,
  keyColumns: ['id'],
  ...overrides,
});

const report = (tables: TableValidation[], overrides: Partial<ValidationReport> = {}): ValidationReport => ({
  ok: tables.every((t) => t.ok),
  sourceMode: 'snapshot',
  checksum: true,
  buckets: 16,
  tables,
  warnings: [],
  ...overrides,
});

const film = table('film', {
  sourceRows: 1000,
  targetRows: 1001,
  checksumMatch: false,
  ok: false,
  mismatchedRanges: ['key range 4/16: 60 rows on the source, 61 on the target'],
  differences: [
    { key: '17', kind: 'content-differs' },
    { key: '1001', kind: 'extra-on-target' },
  ],
  firstDifferingKeys: ['17', '1001'],
});

describe('renderValidationText', () => {
  it('aligns the columns and marks each checksum', () => {
    const text = renderValidationText(
      report([table('actor'), table('a_much_longer_name', { sourceRows: 5, targetRows: 5 })]),
    );
    const lines = text.split('\n');
    expect(lines[0]).toBe('table                      source rows  target rows  checksum');
    expect(lines[1]).toBe('public.actor                     1,200        1,200  ✅');
    expect(lines[2]).toBe('public.a_much_longer_name            5            5  ✅');
    expect(text).toContain('Validation passed: 2 of 2 tables match');
  });

  it("sums a hypertable's matching chunks into one row and keeps differing chunks apart", () => {
    const chunk = (n: number, overrides: Partial<TableValidation> = {}) =>
      table(`_hyper_1_${n}_chunk`, {
        table: `public.metrics chunk _hyper_1_${n}_chunk`,
        schema: '_timescaledb_internal',
        hypertable: 'public.metrics',
        sourceRows: 100,
        targetRows: 100,
        ...overrides,
      });
    const all = [chunk(1), table('actor'), chunk(2), chunk(3)];
    const text = renderValidationText(report(all));
    expect(text.split('\n').slice(0, 3)).toEqual([
      'table                      source rows  target rows  checksum',
      'public.metrics (3 chunks)          300          300  ✅',
      'public.actor                     1,200        1,200  ✅',
    ]);
    expect(text).toContain('Validation passed: 4 of 4 tables match');
    const differing = chunk(2, { targetRows: 90, checksumMatch: false, ok: false });
    const failed = renderValidationText(report([chunk(1), differing, chunk(3)]));
    expect(failed).toContain('public.metrics (2 other chunks)');
    expect(failed).toMatch(/public\.metrics chunk _hyper_1_2_chunk\s+100\s+90 {2}❌/);
    const markdown = renderValidationMarkdown(report([chunk(1), differing, chunk(3)]));
    expect(markdown).toContain('| `public.metrics (2 other chunks)` | 200 | 200 | match | ✅ |');
  });

  it('lists the differing ranges and keys below the table', () => {
    const text = renderValidationText(report([table('actor'), film]));
    expect(text).toContain('public.film         1,000        1,001  ❌');
    expect(text).toContain(
      'Differences:\n  public.film:\n    row counts differ: 1,000 on the source, 1,001 on the target',
    );
    expect(text).toContain('1 key range differs: key range 4/16');
    expect(text).toContain('    id = 17: content differs\n    id = 1001: only on the target');
    expect(text).toContain('Validation failed: 1 of 2 tables differ');
  });

  it('shows a dash for checksums not requested and "missing" for a table not on the target', () => {
    const gone = table('gone', {
      targetRows: null,
      checksumMatch: null,
      ok: false,
      problem: 'missing on the target',
    });
    const text = renderValidationText(
      report([table('actor', { checksumMatch: null }), gone], { checksum: false }),
    );
    expect(text).toMatch(/public\.actor\s+1,200\s+1,200 {2}–/);
    expect(text).toMatch(/public\.gone\s+1,200\s+missing {2}–/);
    expect(text).toContain('  public.gone:\n    missing on the target');
  });

  it('escapes control characters in keys and cuts very long ones', () => {
    const text = renderValidationText(
      report([
        table('t', {
          ok: false,
          checksumMatch: false,
          keyColumns: null,
          differences: [
            { key: 'a\tb\nc', kind: 'missing-on-target' },
            { key: 'x'.repeat(500), kind: 'extra-on-target' },
          ],
        }),
      ]),
    );
    expect(text).toContain('row a\\tb\\nc: only on the source');
    expect(text).toContain(`row ${'x'.repeat(120)}…: only on the target`);
  });

  it('repeats the live-source warning', () => {
    const text = renderValidationText(
      report([table('actor')], { sourceMode: 'live', warnings: ['Source read live.'] }),
    );
    expect(text).toContain('WARNING: Source read live.');
    expect(text).toContain('source read live');
  });
});

describe('renderValidationMarkdown', () => {
  it('puts a one-line verdict on top and one table row per table', () => {
    const md = renderValidationMarkdown(report([table('actor'), film]));
    const lines = md.split('\n');
    expect(lines[0]).toBe(
      "### ❌ Validation failed: 1 of 2 tables differ (row counts and checksums; source read in the migration's snapshot).",
    );
    expect(md).toContain('| table | source rows | target rows | checksum | ok |');
    expect(md).toContain('| `public.actor` | 1,200 | 1,200 | match | ✅ |');
    expect(md).toContain('| `public.film` | 1,000 | 1,001 | differs | ❌ |');
    expect(md).toContain('- `public.film`\n  - row counts differ: 1,000 on the source, 1,001 on the target');
    expect(md).toContain('  - `id` = `17`: content differs');
  });

  it('escapes pipes in table names so the table keeps its columns', () => {
    const md = renderValidationMarkdown(report([table('x', { table: 'public."a|b*c_[d](e)"' })]));
    const row = md.split('\n').find((l) => l.startsWith('| `'));
    expect(row).toBe('| `public."a\\|b*c_[d](e)"` | 1,200 | 1,200 | match | ✅ |');
    // Unescaped pipes delimit exactly the five cells.
    expect(row?.split(/(?<!\\)\|/).length).toBe(7);
  });

  it('fences names that contain backticks with a longer run of backticks', () => {
    expect(markdownCode('a`b', { inTable: true })).toBe('``a`b``');
    expect(markdownCode('`x``', { inTable: false })).toBe('``` `x`` ```');
    expect(markdownCode('two\nlines|', { inTable: false })).toBe('`two\\nlines|`');
    expect(markdownCode('', { inTable: true })).toBe('*(empty)*');
  });

  it('backslash-escapes the characters of free text that Markdown would interpret', () => {
    expect(escapeMarkdown('a|b`c<d>&e *f* _g_ [h](i) ~j~ \\ ü, (1).')).toBe(
      'a\\|b\\`c\\<d\\>\\&e \\*f\\* \\_g\\_ \\[h\\](i) \\~j\\~ \\\\ ü, (1).',
    );
  });

  it('summarizes very many tables under the size cap: differing ones first, then a count of the rest', () => {
    const many = Array.from({ length: 20_000 }, (_, i) =>
      table(`t${String(i).padStart(5, '0')}_${'x'.repeat(40)}`),
    );
    const bad = table('zz_bad', { sourceRows: 3, targetRows: 2, checksumMatch: false, ok: false });
    const md = renderValidationMarkdown(report([...many, bad]), { maxBytes: 100_000 });
    expect(new TextEncoder().encode(md).length).toBeLessThanOrEqual(100_000);
    const rows = md.split('\n').filter((l) => l.startsWith('| `'));
    expect(rows[0]).toContain('zz_bad');
    expect(rows.length).toBeGreaterThan(100);
    const hidden = (20_000 - (rows.length - 1)).toLocaleString('en-US');
    expect(md).toContain(`|\n\n${hidden} more tables match.\n`);
    expect(md).toContain('row counts differ: 3 on the source, 2 on the target');
  });

  it('says how many differing tables it could not show when even those do not fit', () => {
    const bad = Array.from({ length: 5_000 }, (_, i) =>
      table(`bad_${i}`, { sourceRows: 3, targetRows: 2, checksumMatch: false, ok: false }),
    );
    const md = renderValidationMarkdown(report(bad), { maxBytes: 20_000 });
    expect(new TextEncoder().encode(md).length).toBeLessThanOrEqual(20_000);
    expect(md).toMatch(/\n\n[\d,]+ more tables not shown, [\d,]+ of them differ: run validate --json/);
  });

  it('stays under the default 1 MiB cap for 100,000 tables', () => {
    const many = Array.from({ length: 100_000 }, (_, i) => table(`table_${i}`));
    const md = renderValidationMarkdown(report(many));
    expect(new TextEncoder().encode(md).length).toBeLessThanOrEqual(1_000_000);
    expect(md).toMatch(/\n\n\d[\d,]* more tables match\.\n/);
  });

  it('renders a small report in full, in catalog order', () => {
    const md = renderValidationMarkdown(report([table('b'), film, table('c')]));
    const rows = md.split('\n').filter((l) => l.startsWith('| `'));
    expect(rows.map((r) => r.split(' | ')[0])).toEqual(['| `public.b`', '| `public.film`', '| `public.c`']);
    expect(md).not.toContain('more tables');
  });
});
