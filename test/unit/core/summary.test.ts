// The job summary's pure parts: facts folded from events, per-table copy figures under the 1 MiB cap,
// the Mermaid lag chart, cutover timings, and the last-resort cut.
import { describe, expect, it } from 'vitest';
import type { MigrationEvent } from '../../../src/core/events';
import {
  capMarkdown,
  createSummaryFacts,
  downsampleLag,
  type LagPoint,
  recordSummaryEvent,
  renderCopySection,
  renderCutoverSection,
  renderLagChart,
  renderReplaySection,
  renderWarningsSection,
  SUMMARY_MAX_BYTES,
  utf8Length,
} from '../../../src/core/summary';

const lag = (lagBytes: number, rates = { sourceWalRate: 1000, replayRate: 2000 }): MigrationEvent => ({
  type: 'replay:lag',
  lagBytes,
  lagSeconds: 0,
  sourceLsn: '0/3000000',
  appliedLsn: '0/2000000',
  ...rates,
  etaSeconds: 10,
  caughtUp: lagBytes < 500 * 1024,
  retainedBytes: 4096,
});

describe('the copy section', () => {
  it('sums the parts of a table and lists tables biggest first with rows, bytes, seconds and rate', () => {
    const facts = createSummaryFacts();
    recordSummaryEvent(
      facts,
      { type: 'copy:plan', tables: 2, parts: 3, partsDone: 0, estBytes: 0, rowsDone: 0, bytesDone: 0 },
      0,
    );
    for (const [table, rows, bytes, seconds] of [
      ['public.small', 10, 1024, 0.5],
      ['public.big', 1000, 2 * 1024 * 1024, 1],
      ['public.big', 1000, 2 * 1024 * 1024, 1],
    ] as const)
      recordSummaryEvent(facts, { type: 'copy:part:done', partId: 1, table, rows, bytes, seconds }, 0);
    recordSummaryEvent(
      facts,
      { type: 'copy:done', rows: 2010, bytes: 4 * 1024 * 1024 + 1024, seconds: 2 },
      0,
    );
    const md = renderCopySection(facts);
    expect(md).toContain(
      '2 tables in 3 parts; 2 tables copied by this run: 2,010 rows, 4.0 MB; finished in 2.0s',
    );
    const rows = md.split('\n').filter((l) => l.startsWith('| `'));
    expect(rows).toEqual([
      '| `public.big` (2 parts) | 2,000 | 4.0 MB | 2.0 | 2.0 MB/s |',
      '| `public.small` | 10 | 1.0 kB | 0.5 | 2.0 kB/s |',
    ]);
  });

  it('says how many parts an earlier run copied', () => {
    const facts = createSummaryFacts();
    recordSummaryEvent(
      facts,
      { type: 'copy:plan', tables: 5, parts: 8, partsDone: 6, estBytes: 0, rowsDone: 0, bytesDone: 0 },
      0,
    );
    expect(renderCopySection(facts)).toContain('6 of 8 parts had been copied by an earlier run.');
  });

  it('keeps 200,000 tables under the cap: the biggest listed, one line for the rest', () => {
    const facts = createSummaryFacts();
    for (let i = 0; i < 200_000; i++) {
      recordSummaryEvent(
        facts,
        {
          type: 'copy:part:done',
          partId: i,
          table: `tenant_${i}.orders`,
          rows: i,
          bytes: i * 100,
          seconds: 0.1,
        },
        0,
      );
    }
    const md = renderCopySection(facts);
    expect(utf8Length(md)).toBeLessThanOrEqual(SUMMARY_MAX_BYTES);
    expect(md).toContain('| `tenant_199999.orders` |');
    expect(md).toMatch(/…and [\d,]+ smaller tables \([\d,]+ rows, [\d.]+ [kMGT]B\) not listed/);
  });

  it('shows a hostile table name as one code span in one cell', () => {
    const facts = createSummaryFacts();
    recordSummaryEvent(
      facts,
      { type: 'copy:part:done', partId: 1, table: 'public."a|b`c\nd"', rows: 1, bytes: 1, seconds: 1 },
      0,
    );
    expect(renderCopySection(facts)).toContain('| ``public."a\\|b`c\\x0ad"`` | 1 |');
  });
});

describe('the replay section', () => {
  it('charts the lag as a Mermaid xychart in a readable unit, with last, mean and peak rates', () => {
    const facts = createSummaryFacts();
    [3, 2, 1].forEach((mb, i) => {
      recordSummaryEvent(facts, lag(mb * 1024 * 1024), 10_000 * i);
    });
    const md = renderReplaySection(facts);
    expect(md).toContain(
      [
        '```mermaid',
        'xychart-beta',
        '  title "Replay lag"',
        '  x-axis "time since the first report" ["0.0s", "10s", "20s"]',
        '  y-axis "lag (MB)"',
        '  line [3.00, 2.00, 1.00]',
        '```',
      ].join('\n'),
    );
    expect(md).toContain('| replay lag | 1.0 MB | 2.0 MB | 3.0 MB |');
    expect(md).toContain('| source WAL rate | 1000 B/s | 1000 B/s | 1000 B/s |');
    expect(md).toContain('the slot retains 4.0 kB of WAL');
  });

  it('keeps the worst lag of each stretch when it thins a long series out, and bounded memory for 20 h', () => {
    const facts = createSummaryFacts();
    for (let i = 0; i < 72_000; i++) recordSummaryEvent(facts, lag(i === 50_000 ? 9e9 : 1000), i * 1000);
    expect(facts.lag.length).toBeLessThanOrEqual(2048);
    expect(Math.max(...facts.lag.map((p) => p.lagBytes))).toBe(9e9);
    const points: LagPoint[] = facts.lag;
    expect(downsampleLag(points, 60)).toHaveLength(60);
    expect(renderLagChart(points)).toContain('y-axis "lag (GB)"');
    expect(renderLagChart(points)).toMatch(/line \[(?:[\d.]+, ){59}[\d.]+\]/);
  });
});

describe('the cutover and warnings sections', () => {
  it('lists each step with the seconds since the request, then the total', () => {
    const facts = createSummaryFacts();
    recordSummaryEvent(facts, { type: 'cutover:step', step: 'requested', detail: 'end position 0/1' }, 0);
    recordSummaryEvent(facts, { type: 'cutover:step', step: 'drained', detail: 'applied', seconds: 0.4 }, 0);
    recordSummaryEvent(facts, { type: 'cutover:done', seconds: 1.25, endLsn: '0/1' }, 0);
    const md = renderCutoverSection(facts);
    expect(md).toContain('Completed in 1.3s at source position `0/1`.');
    expect(md).toContain('| requested | end position 0/1 | 0.0 |');
    expect(md).toContain('| drained | applied | 0.4 |');
    expect(md).toContain('| done | | 1.3 |');
  });

  it('keeps the first 20 warnings and counts the rest', () => {
    const facts = createSummaryFacts();
    for (let i = 0; i < 25; i++)
      recordSummaryEvent(facts, { type: 'log', level: 'warn', message: `slow <b>${i}</b>` }, 0);
    const md = renderWarningsSection(facts);
    expect(md).toContain('- slow \\<b\\>0\\</b\\>');
    expect(md).toContain('- …and 5 more in the log.');
  });
});

describe('capMarkdown', () => {
  it('cuts at a line, closes an open code fence and says so', () => {
    const text = ['# head', '```mermaid', ...Array.from({ length: 1000 }, (_, i) => `line ${i}`), '```'].join(
      '\n',
    );
    const cut = capMarkdown(text, 2000);
    expect(utf8Length(cut)).toBeLessThanOrEqual(2000);
    expect(cut).toMatch(/line \d+\n```\n\n\*\(Summary cut/);
    expect(capMarkdown('short')).toBe('short');
  });
});
