// The GitHub job summary of one Action step, as pure functions: facts folded from the migration events
// (copy per table, lag over time, cutover steps, warnings) and their Markdown, kept under GitHub's 1 MiB cap.

import type { MigrationEvent } from './events';
import { formatBytes, formatCount, formatDuration } from './format';
import type { ValidationReport } from './validation';

/** GitHub refuses a step summary above 1 MiB; this leaves room for what other steps append. */
export const SUMMARY_MAX_BYTES = 1_000_000;
/** Lag samples kept for the chart; older ones are merged pairwise beyond this (bounded memory for 20 h). */
const MAX_LAG_SAMPLES = 2048;
/** Points drawn in the lag chart: enough to see the shape, few enough for Mermaid to label. */
const CHART_POINTS = 60;
const MAX_WARNINGS = 20;

export interface TableCopyFact {
  table: string;
  parts: number;
  rows: number;
  bytes: number;
  /** Sum of the parts' copy times (worker-seconds): parts of one table may run in parallel. */
  seconds: number;
}

export interface LagPoint {
  /** Milliseconds since the first report. */
  offsetMs: number;
  /** Worst lag in the span this point stands for. */
  lagBytes: number;
  sourceWalRate: number;
  replayRate: number;
}

export interface CutoverStepFact {
  step: string;
  detail: string | undefined;
  seconds: number | undefined;
}

export interface SummaryFacts {
  copyPlan: { tables: number; parts: number; partsDoneBefore: number } | undefined;
  copyTables: Map<string, TableCopyFact>;
  copyDone: { rows: number; bytes: number; seconds: number } | undefined;
  lagStartMs: number | undefined;
  lag: LagPoint[];
  lastLag: Extract<MigrationEvent, { type: 'replay:lag' }> | undefined;
  cutoverSteps: CutoverStepFact[];
  cutoverDone: { seconds: number; endLsn: string } | undefined;
  /** The validation a cutover ran (rendered by the entry with the validation renderer). */
  validation: ValidationReport | undefined;
  snapshot: { name: string; consistentLsn: string; slotName: string } | undefined;
  warnings: string[];
  warningsDropped: number;
}

export function createSummaryFacts(): SummaryFacts {
  return {
    copyPlan: undefined,
    copyTables: new Map(),
    copyDone: undefined,
    lagStartMs: undefined,
    lag: [],
    lastLag: undefined,
    cutoverSteps: [],
    cutoverDone: undefined,
    validation: undefined,
    snapshot: undefined,
    warnings: [],
    warningsDropped: 0,
  };
}

/** Folds one event (received at `atMs`) into the facts. Mutates `facts`, which the caller owns. */
export function recordSummaryEvent(facts: SummaryFacts, event: MigrationEvent, atMs: number): void {
  switch (event.type) {
    case 'snapshot:ready':
      facts.snapshot = {
        name: event.snapshotName,
        consistentLsn: event.consistentLsn,
        slotName: event.slotName,
      };
      return;
    case 'copy:plan':
      facts.copyPlan = { tables: event.tables, parts: event.parts, partsDoneBefore: event.partsDone };
      return;
    case 'copy:part:done': {
      const fact = facts.copyTables.get(event.table) ?? {
        table: event.table,
        parts: 0,
        rows: 0,
        bytes: 0,
        seconds: 0,
      };
      fact.parts += 1;
      fact.rows += event.rows;
      fact.bytes += event.bytes;
      fact.seconds += event.seconds;
      facts.copyTables.set(event.table, fact);
      return;
    }
    case 'validation:done':
      facts.validation = event.report;
      return;
    case 'copy:done':
      facts.copyDone = { rows: event.rows, bytes: event.bytes, seconds: event.seconds };
      return;
    case 'replay:lag': {
      facts.lagStartMs ??= atMs;
      facts.lastLag = event;
      facts.lag.push({
        offsetMs: atMs - facts.lagStartMs,
        lagBytes: event.lagBytes,
        sourceWalRate: event.sourceWalRate,
        replayRate: event.replayRate,
      });
      if (facts.lag.length > MAX_LAG_SAMPLES) facts.lag = mergePairs(facts.lag);
      return;
    }
    case 'cutover:step':
      facts.cutoverSteps.push({ step: event.step, detail: event.detail, seconds: event.seconds });
      return;
    case 'cutover:done':
      facts.cutoverDone = { seconds: event.seconds, endLsn: event.endLsn };
      return;
    case 'log':
      if (event.level === 'info') return;
      if (facts.warnings.length < MAX_WARNINGS) facts.warnings.push(event.message);
      else facts.warningsDropped += 1;
      return;
    default:
      return;
  }
}

/** Halves a series: each pair becomes one point with the worse lag and the mean rates. */
function mergePairs(points: LagPoint[]): LagPoint[] {
  const out: LagPoint[] = [];
  for (let i = 0; i < points.length; i += 2) {
    const a = points[i] as LagPoint;
    const b = points[i + 1];
    out.push(
      b
        ? {
            offsetMs: a.offsetMs,
            lagBytes: Math.max(a.lagBytes, b.lagBytes),
            sourceWalRate: (a.sourceWalRate + b.sourceWalRate) / 2,
            replayRate: (a.replayRate + b.replayRate) / 2,
          }
        : a,
    );
  }
  return out;
}

// ---- Markdown ----

/** UTF-8 length without encoding. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** Control characters escaped, so hostile names stay on one line. */
function escapeControl(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: exactly the characters we escape
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Free text for Markdown: nothing it contains opens emphasis, code, links, HTML or a table cell. */
export function escapeMarkdownText(text: string): string {
  return escapeControl(text).replace(/[\\`*_[\]<>&|~#]/g, (c) => `\\${c}`);
}

/** User data (a table name) as a code span inside a table cell. */
export function markdownCodeCell(text: string): string {
  const body = escapeControl(text);
  if (body === '') return '*(empty)*';
  const longest = Math.max(0, ...(body.match(/`+/g) ?? []).map((run) => run.length));
  const fence = '`'.repeat(longest + 1);
  const pad = /^[` ]|[` ]$/.test(body) ? ' ' : '';
  return `${fence}${pad}${body.replaceAll('|', '\\|')}${pad}${fence}`;
}

const rate = (bytes: number, seconds: number) => (seconds > 0 ? `${formatBytes(bytes / seconds)}/s` : '–');

/**
 * Per-table copy figures, biggest first. When the list does not fit `maxBytes`, the biggest tables that
 * fit are shown and one line sums up the rest.
 */
export function renderCopySection(facts: SummaryFacts, maxBytes = SUMMARY_MAX_BYTES): string {
  if (!facts.copyPlan && facts.copyTables.size === 0 && !facts.copyDone) return '';
  const tables = [...facts.copyTables.values()].sort((a, b) => b.bytes - a.bytes || a.rows - b.rows);
  const rows = tables.reduce((s, t) => s + t.rows, 0);
  const bytes = tables.reduce((s, t) => s + t.bytes, 0);
  const lines = ['### Copy', ''];
  const plan = facts.copyPlan;
  const head: string[] = [];
  if (plan) head.push(`${formatCount(plan.tables)} tables in ${formatCount(plan.parts)} parts`);
  head.push(
    `${formatCount(tables.length)} tables copied by this run: ${formatCount(rows)} rows, ${formatBytes(bytes)}`,
  );
  if (facts.copyDone) {
    head.push(
      `finished in ${formatDuration(facts.copyDone.seconds * 1000)} (${rate(facts.copyDone.bytes, facts.copyDone.seconds)})`,
    );
  }
  lines.push(`${head.join('; ')}.`);
  if (plan && plan.partsDoneBefore > 0) {
    lines.push(
      '',
      `${formatCount(plan.partsDoneBefore)} of ${formatCount(plan.parts)} parts had been copied by an earlier run.`,
    );
  }
  if (tables.length === 0) return `${lines.join('\n')}\n`;
  lines.push('', '| table | rows | bytes | seconds | rate |', '| --- | ---: | ---: | ---: | ---: |');
  const reserve = 300;
  let used = utf8Length(lines.join('\n')) + reserve;
  let shown = 0;
  for (const t of tables) {
    const line = `| ${markdownCodeCell(t.table)}${t.parts > 1 ? ` (${t.parts} parts)` : ''} | ${formatCount(t.rows)} | ${formatBytes(t.bytes)} | ${t.seconds.toFixed(1)} | ${rate(t.bytes, t.seconds)} |`;
    const cost = utf8Length(line) + 1;
    if (used + cost > maxBytes) break;
    lines.push(line);
    used += cost;
    shown += 1;
  }
  const rest = tables.slice(shown);
  if (rest.length > 0) {
    const restRows = rest.reduce((s, t) => s + t.rows, 0);
    const restBytes = rest.reduce((s, t) => s + t.bytes, 0);
    lines.push(
      '',
      `…and ${formatCount(rest.length)} smaller tables (${formatCount(restRows)} rows, ${formatBytes(restBytes)}) not listed, to keep this summary under GitHub's 1 MiB limit.`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Evenly spaced points of the series (each the worst lag of its stretch), at most `count`. */
export function downsampleLag(points: readonly LagPoint[], count = CHART_POINTS): LagPoint[] {
  if (points.length <= count) return [...points];
  const out: LagPoint[] = [];
  const step = points.length / count;
  for (let i = 0; i < count; i++) {
    const slice = points.slice(
      Math.floor(i * step),
      Math.max(Math.floor((i + 1) * step), Math.floor(i * step) + 1),
    );
    const first = slice[0] as LagPoint;
    out.push({
      offsetMs: first.offsetMs,
      lagBytes: Math.max(...slice.map((p) => p.lagBytes)),
      sourceWalRate: slice.reduce((s, p) => s + p.sourceWalRate, 0) / slice.length,
      replayRate: slice.reduce((s, p) => s + p.replayRate, 0) / slice.length,
    });
  }
  return out;
}

/** The unit that keeps the biggest value readable: B, kB, MB or GB (1024-based like formatBytes). */
function chooseUnit(maxBytes: number): { name: string; factor: number } {
  const units = [
    { name: 'GB', factor: 1024 ** 3 },
    { name: 'MB', factor: 1024 ** 2 },
    { name: 'kB', factor: 1024 },
  ];
  return units.find((u) => maxBytes >= u.factor) ?? { name: 'B', factor: 1 };
}

/** A Mermaid xychart (GitHub renders it) of the replay lag over time. */
export function renderLagChart(points: readonly LagPoint[]): string {
  const shown = downsampleLag(points);
  const unit = chooseUnit(Math.max(0, ...shown.map((p) => p.lagBytes)));
  const label = (ms: number) => `"${formatDuration(ms)}"`;
  const value = (bytes: number) => {
    const v = bytes / unit.factor;
    return v >= 100 ? v.toFixed(0) : v.toFixed(2);
  };
  return [
    '```mermaid',
    'xychart-beta',
    '  title "Replay lag"',
    `  x-axis "time since the first report" [${shown.map((p) => label(p.offsetMs)).join(', ')}]`,
    `  y-axis "lag (${unit.name})"`,
    `  line [${shown.map((p) => value(p.lagBytes)).join(', ')}]`,
    '```',
  ].join('\n');
}

export function renderReplaySection(facts: SummaryFacts): string {
  const last = facts.lastLag;
  if (!last) return '';
  const points = facts.lag;
  const stats = (pick: (p: LagPoint) => number) => {
    const values = points.map(pick);
    const mean = values.reduce((s, v) => s + v, 0) / Math.max(values.length, 1);
    return { mean, peak: Math.max(0, ...values) };
  };
  const wal = stats((p) => p.sourceWalRate);
  const replay = stats((p) => p.replayRate);
  const lag = stats((p) => p.lagBytes);
  const span = points.length ? (points[points.length - 1] as LagPoint).offsetMs : 0;
  const state = last.caughtUp
    ? `caught up (lag ${formatBytes(last.lagBytes)})`
    : `lag ${formatBytes(last.lagBytes)}, ${last.etaSeconds === null ? 'not catching up at the current rates' : `ETA ${formatDuration(last.etaSeconds * 1000)}`}`;
  const lines = [
    '### Replay',
    '',
    `Last report: ${state}; applied up to \`${last.appliedLsn}\` (source at \`${last.sourceLsn}\`)${last.retainedBytes !== null ? `; the slot retains ${formatBytes(last.retainedBytes)} of WAL` : ''}. Lag reported over ${formatDuration(span)}.`,
    '',
  ];
  if (points.length >= 2) lines.push(renderLagChart(points), '');
  lines.push(
    '| | last | mean | peak |',
    '| --- | ---: | ---: | ---: |',
    `| replay lag | ${formatBytes(last.lagBytes)} | ${formatBytes(lag.mean)} | ${formatBytes(lag.peak)} |`,
    `| source WAL rate | ${formatBytes(last.sourceWalRate)}/s | ${formatBytes(wal.mean)}/s | ${formatBytes(wal.peak)}/s |`,
    `| replay rate | ${formatBytes(last.replayRate)}/s | ${formatBytes(replay.mean)}/s | ${formatBytes(replay.peak)}/s |`,
  );
  return `${lines.join('\n')}\n`;
}

export function renderCutoverSection(facts: SummaryFacts): string {
  if (facts.cutoverSteps.length === 0 && !facts.cutoverDone) return '';
  const lines = ['### Cutover', ''];
  if (facts.cutoverDone) {
    lines.push(
      `Completed in ${formatDuration(facts.cutoverDone.seconds * 1000)} at source position \`${facts.cutoverDone.endLsn}\`.`,
      '',
    );
  }
  lines.push('| step | detail | seconds since the request |', '| --- | --- | ---: |');
  for (const s of facts.cutoverSteps) {
    lines.push(
      `| ${escapeMarkdownText(s.step)} | ${escapeMarkdownText(s.detail ?? '')} | ${s.seconds === undefined ? '0.0' : s.seconds.toFixed(1)} |`,
    );
  }
  if (facts.cutoverDone) lines.push(`| done | | ${facts.cutoverDone.seconds.toFixed(1)} |`);
  return `${lines.join('\n')}\n`;
}

/** The warnings logged during the step, except those a section already shows (`shown`). */
export function renderWarningsSection(facts: SummaryFacts, shown: readonly string[] = []): string {
  const warnings = facts.warnings.filter((w) => !shown.includes(w.trim()));
  if (warnings.length === 0) return '';
  const lines = ['### Warnings', ''];
  for (const w of warnings) lines.push(`- ${escapeMarkdownText(w.trim()).replaceAll('\n', ' ')}`);
  if (facts.warningsDropped > 0) lines.push(`- …and ${facts.warningsDropped} more in the log.`);
  return `${lines.join('\n')}\n`;
}

/**
 * Cuts Markdown to at most `maxBytes` at a line boundary, closing an open code fence and saying so.
 * A last resort: the sections size themselves first.
 */
export function capMarkdown(text: string, maxBytes = SUMMARY_MAX_BYTES): string {
  if (utf8Length(text) <= maxBytes) return text;
  const note =
    "\n\n*(Summary cut to stay under GitHub's 1 MiB limit; the full report is in the state artifact.)*\n";
  const budget = maxBytes - utf8Length(note) - 8;
  const out: string[] = [];
  let used = 0;
  let fenceOpen = false;
  for (const line of text.split('\n')) {
    const cost = utf8Length(line) + 1;
    if (used + cost > budget) break;
    out.push(line);
    used += cost;
    if (line.startsWith('```')) fenceOpen = !fenceOpen;
  }
  if (fenceOpen) out.push('```');
  return `${out.join('\n')}${note}`;
}
