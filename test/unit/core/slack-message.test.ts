import { describe, expect, it } from 'vitest';
import type { MigrationEvent } from '../../../src/core/events';
import {
  escapeSlack,
  renderMilestone,
  renderPreformatted,
  renderProgressMessage,
  renderValidationReport,
} from '../../../src/core/slack-message';
import { createProgress, reduceProgress } from '../../../src/core/slack-progress';
import type { ValidationReport } from '../../../src/core/validation';

const lagEvent: MigrationEvent = {
  type: 'replay:lag',
  lagBytes: 2 * 1024 * 1024,
  lagSeconds: 3.5,
  sourceLsn: '0/2',
  appliedLsn: '0/1',
  sourceWalRate: 1024,
  replayRate: 4096,
  etaSeconds: 90,
  caughtUp: false,
  retainedBytes: null,
};

describe('Slack messages', () => {
  it('shows phase, tables, rows, lag, rates, ETA and the lag target verdict in the live message', () => {
    let s = createProgress('shop', { bytes: 1024 * 1024 }, 0);
    for (const e of [
      { type: 'copy:plan', tables: 2, parts: 3, partsDone: 0, estBytes: 10, rowsDone: 0, bytesDone: 0 },
      { type: 'copy:part:start', partId: 1, table: 'public.a', partIndex: 0, partCount: 1, estBytes: 5 },
      { type: 'copy:part:done', partId: 1, table: 'public.a', rows: 1234, bytes: 5, seconds: 1 },
      { type: 'copy:done', rows: 2000, bytes: 10, seconds: 2 },
      lagEvent,
    ] as MigrationEvent[])
      s = reduceProgress(s, e, 60_000).state;
    const text = JSON.stringify(renderProgressMessage(s, { runUrl: 'https://example.test/run/1' }));
    expect(s.phase).toBe('replay');
    for (const part of [
      '2 / 2',
      '2,000',
      '2.0 MB / 3.5 s',
      '1.0 kB/s',
      '4.0 kB/s',
      '1m30s',
      'above',
      'workflow run',
    ])
      expect(text).toContain(part);
  });

  it('counts lag reported before the copy is done as the spool, not the replay', () => {
    const s = reduceProgress(createProgress('shop', null, 0, true), { ...lagEvent, caughtUp: true }, 1);
    expect(s.state.phase).toBe('starting');
    expect(s.milestones).toEqual([]);
  });

  it('escapes user data for mrkdwn and keeps code blocks closed', () => {
    expect(escapeSlack('<@U1> & <!channel>')).toBe('&lt;@U1&gt; &amp; &lt;!channel&gt;');
    const m = renderPreformatted('t', 'a```b <x>');
    expect(JSON.stringify(m)).not.toContain('a```b');
    expect(JSON.stringify(m)).toContain('&lt;x&gt;');
  });

  it('keeps long reports within Slack block limits', () => {
    const m = renderPreformatted(
      't',
      Array.from({ length: 5000 }, (_, i) => `line ${i} ${'x'.repeat(80)}`).join('\n'),
    );
    expect(m.blocks?.length).toBeLessThanOrEqual(11);
    for (const b of m.blocks ?? [])
      if (b.type === 'section') expect(b.text?.text.length ?? 0).toBeLessThanOrEqual(3000);
  });

  it('renders a validation report as a table with differing tables first', () => {
    const report: ValidationReport = {
      ok: false,
      sourceMode: 'aligned',
      checksum: true,
      buckets: 16,
      warnings: [],
      tables: [
        {
          table: 'public.ok',
          schema: 'public',
          name: 'ok',
          sourceRows: 5,
          targetRows: 5,
          checksumMatch: true,
          ok: true,
          keyColumns: ['id'],
        },
        {
          table: 'public.bad',
          schema: 'public',
          name: 'bad',
          sourceRows: 5,
          targetRows: 4,
          checksumMatch: false,
          ok: false,
          keyColumns: ['id'],
          firstDifferingKeys: ['7'],
        },
      ],
    };
    const text = JSON.stringify(renderValidationReport(report));
    expect(text).toContain('Validation failed');
    expect(text.indexOf('public.bad')).toBeLessThan(text.indexOf('public.ok'));
    expect(text).toContain('key 7 differs');
  });

  it("turns the cutover's validation into a table milestone, and an error into what happened and the fix", () => {
    const report: ValidationReport = {
      ok: true,
      sourceMode: 'live',
      checksum: false,
      buckets: null,
      warnings: [],
      tables: [],
    };
    const r = reduceProgress(createProgress('shop', null, 0), { type: 'validation:done', report }, 5);
    expect(r.milestones).toEqual([{ kind: 'validation', report }]);
    expect(JSON.stringify(renderMilestone({ kind: 'validation', report }))).toContain('Validation passed');
    const error = JSON.stringify(
      renderMilestone({ kind: 'error', code: 'SLOT_IN_USE', message: 'held by <pid 7>', hint: 'stop it' }),
    );
    expect(error).toContain('SLOT_IN_USE');
    expect(error).toContain('held by &lt;pid 7&gt;');
    expect(error).toContain('*Fix:* stop it');
  });
});
