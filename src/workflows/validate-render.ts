// Validation report as an aligned console table and as Markdown for a GitHub job summary (which GitHub
// caps at 1 MiB per step, so very long reports are summarized: differing tables first, then a count).
import { formatCount } from '../core/format';
import { DifferenceKind, type TableValidation, type ValidationReport } from '../core/validation';

/** Below GitHub's 1 MiB job summary limit, with room for what other steps add. */
export const MARKDOWN_MAX_BYTES = 1_000_000;
/** Keys (or keyless row texts) are cut to this many characters in both renderings. */
const LABEL_MAX_CHARS = 120;

const KIND_TEXT: Record<DifferenceKind, string> = {
  [DifferenceKind.missingOnTarget]: 'only on the source',
  [DifferenceKind.extraOnTarget]: 'only on the target',
  [DifferenceKind.contentDiffers]: 'content differs',
};

const rowsText = (n: number | null) => (n === null ? 'missing' : formatCount(n));
/** Width as a terminal shows it, counting code points rather than UTF-16 units. */
const width = (text: string) => [...text].length;

/** Control characters (tabs, newlines from hostile data) shown escaped, so one entry stays one line. */
function escapeControl(text: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  let clean = true;
  for (let i = 0; i < text.length && clean; i++) {
    const unit = text.charCodeAt(i);
    clean = unit >= 0x20 && unit !== 0x7f;
  }
  if (clean) return text;
  let out = '';
  for (const c of text) {
    const code = c.charCodeAt(0);
    out += code < 0x20 || code === 0x7f ? (named[c] ?? `\\x${code.toString(16).padStart(2, '0')}`) : c;
  }
  return out;
}

/** A key or keyless row text for display: escaped and cut (a keyless row can be megabytes). */
function printable(text: string): string {
  const points = [...escapeControl(text)];
  return points.length > LABEL_MAX_CHARS ? `${points.slice(0, LABEL_MAX_CHARS).join('')}…` : points.join('');
}

/** How user data (names, keys) is shown: as is on a console, as a code span in Markdown. */
type Show = (userText: string) => string;

/** What differs about one table, one line each: the problem, the row counts, ranges, then keys. */
function differenceLines(t: TableValidation, show: Show, showFree: Show): string[] {
  const lines: string[] = [];
  if (t.problem) lines.push(showFree(t.problem));
  if (t.targetRows !== null && t.targetRows !== t.sourceRows)
    lines.push(
      `row counts differ: ${formatCount(t.sourceRows)} on the source, ${formatCount(t.targetRows)} on the target`,
    );
  const ranges = t.mismatchedRanges ?? [];
  if (ranges.length)
    lines.push(
      `${ranges.length} key range${ranges.length > 1 ? 's differ' : ' differs'}: ${ranges.join('; ')}`,
    );
  const key =
    t.keyColumns === null
      ? 'row'
      : t.keyColumns.length === 1
        ? show(t.keyColumns[0] ?? '')
        : `(${t.keyColumns.map(show).join(', ')})`;
  const equals = t.keyColumns === null ? ' ' : ' = ';
  for (const d of t.differences ?? [])
    lines.push(`${key}${equals}${show(printable(d.key))}: ${KIND_TEXT[d.kind]}`);
  return lines;
}

/** A row of the rendered table: a table, a chunk that differs, or a hypertable's matching chunks summed. */
interface ShownRow {
  table: string;
  sourceRows: number;
  targetRows: number | null;
  checksumMatch: boolean | null;
  ok: boolean;
}

/**
 * The rows to show: every table, except that the chunks of a TimescaleDB hypertable (there can be
 * thousands) that match are summed into one row per hypertable; differing chunks keep rows of their own.
 */
export function shownRows(tables: readonly TableValidation[]): ShownRow[] {
  const out: ShownRow[] = [];
  const groups = new Map<string, { rows: ShownRow; count: number }>();
  for (const t of tables) {
    if (t.hypertable === undefined || !t.ok) {
      out.push(t);
      continue;
    }
    let group = groups.get(t.hypertable);
    if (!group) {
      group = {
        rows: { table: t.hypertable, sourceRows: 0, targetRows: 0, checksumMatch: t.checksumMatch, ok: true },
        count: 0,
      };
      groups.set(t.hypertable, group);
      out.push(group.rows);
    }
    group.count += 1;
    group.rows.sourceRows += t.sourceRows;
    group.rows.targetRows = (group.rows.targetRows ?? 0) + (t.targetRows ?? 0);
    if (t.checksumMatch !== null)
      group.rows.checksumMatch = t.checksumMatch && group.rows.checksumMatch !== false;
  }
  for (const [name, group] of groups) {
    const differing = tables.filter((t) => t.hypertable === name && !t.ok).length;
    group.rows.table = `${name} (${formatCount(group.count)} ${differing ? 'other ' : ''}chunk${group.count === 1 ? '' : 's'})`;
  }
  return out;
}

function verdict(report: ValidationReport): string {
  const differing = report.tables.filter((t) => !t.ok).length;
  const what = report.checksum ? 'row counts and checksums' : 'row counts only';
  const mode =
    report.sourceMode === 'snapshot'
      ? "source read in the migration's snapshot"
      : report.sourceMode === 'aligned'
        ? 'source read at the position where the replay paused'
        : 'source read live';
  return report.ok
    ? `Validation passed: ${report.tables.length} of ${report.tables.length} tables match (${what}; ${mode}).`
    : `Validation failed: ${differing} of ${report.tables.length} tables differ (${what}; ${mode}).`;
}

export function renderValidationText(report: ValidationReport): string {
  const header = ['table', 'source rows', 'target rows', 'checksum'];
  const mark = (t: ShownRow) => (t.checksumMatch === null ? '–' : t.checksumMatch ? '✅' : '❌');
  const rows = shownRows(report.tables).map((t) => [
    escapeControl(t.table),
    rowsText(t.sourceRows),
    rowsText(t.targetRows),
    mark(t),
  ]);
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const pad = (cells: string[]) =>
    cells
      .map((cell, i) => {
        const gap = ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(cell)));
        // Names left-aligned, numbers right-aligned; the last column is not padded.
        return i === 0 ? cell + gap : i === cells.length - 1 ? cell : gap + cell;
      })
      .join('  ');
  const out = [pad(header), ...rows.map(pad)];
  const differing = report.tables.filter((t) => !t.ok);
  if (differing.length > 0) {
    out.push('', 'Differences:');
    for (const t of differing) {
      out.push(`  ${escapeControl(t.table)}:`);
      for (const line of differenceLines(t, escapeControl, escapeControl)) out.push(`    ${line}`);
    }
  }
  for (const warning of report.warnings) out.push('', `WARNING: ${warning}`);
  out.push('', verdict(report));
  return `${out.join('\n')}\n`;
}

/**
 * Escapes free text for Markdown: the characters that open emphasis, code, links, HTML or entities, and
 * the | that would split a table cell. (Line-start markers cannot occur: every line starts with our text.)
 */
export function escapeMarkdown(text: string): string {
  return escapeControl(text).replace(/[\\`*_[\]<>&|~]/g, (c) => `\\${c}`);
}

/**
 * User data as a Markdown code span: nothing inside is interpreted, except that a GitHub table cell
 * still splits on |, so there it is escaped (GFM unescapes it before the code span is parsed).
 */
export function markdownCode(text: string, options: { inTable: boolean }): string {
  const body = escapeControl(text);
  if (body === '') return '*(empty)*';
  // A run of backticks longer than any inside the text delimits it; a space keeps edge backticks apart.
  const longest = Math.max(0, ...(body.match(/`+/g) ?? []).map((run) => run.length));
  const fence = '`'.repeat(longest + 1);
  const pad = /^[` ]|[` ]$/.test(body) ? ' ' : '';
  return `${fence}${pad}${options.inTable ? body.replaceAll('|', '\\|') : body}${pad}${fence}`;
}

/** UTF-8 length without encoding (reports can hold 100,000 rows). */
function utf8Bytes(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      bytes += 4; // a surrogate pair is one 4-byte character
      i++;
    } else bytes += 3;
  }
  return bytes;
}

export function renderValidationMarkdown(
  report: ValidationReport,
  options: { maxBytes?: number } = {},
): string {
  const maxBytes = options.maxBytes ?? MARKDOWN_MAX_BYTES;
  const cell = (text: string) => markdownCode(text, { inTable: true });
  const code = (text: string) => markdownCode(text, { inTable: false });
  const head = [
    `### ${report.ok ? '✅' : '❌'} ${verdict(report)}`,
    '',
    ...report.warnings.flatMap((w) => [`> ⚠️ ${escapeMarkdown(w)}`, '']),
    '| table | source rows | target rows | checksum | ok |',
    '| --- | ---: | ---: | :---: | :---: |',
  ];
  const row = (t: ShownRow) =>
    `| ${cell(t.table)} | ${rowsText(t.sourceRows)} | ${rowsText(t.targetRows)} | ${t.checksumMatch === null ? '–' : t.checksumMatch ? 'match' : 'differs'} | ${t.ok ? '✅' : '❌'} |`;
  const details = (t: TableValidation) => [
    `- ${code(t.table)}`,
    ...differenceLines(t, code, escapeMarkdown).map((line) => `  - ${line}`),
  ];
  const differing = report.tables.filter((t) => !t.ok);
  const DETAILS_HEADING = ['', '#### Differences', ''];

  const shown = shownRows(report.tables);
  const rows = shown.map(row);
  const full = [
    ...head,
    ...rows,
    ...(differing.length ? [...DETAILS_HEADING, ...differing.flatMap(details)] : []),
  ];
  const fullText = `${full.join('\n')}\n`;
  if (utf8Bytes(fullText) <= maxBytes) return fullText;

  // Too big for a job summary. Space goes first to the differing tables' rows, then to their details,
  // then to as many matching rows as still fit; a count stands in for the rest.
  const reserve = 400; // the closing lines
  let used = utf8Bytes(`${head.join('\n')}\n`) + reserve;
  const take = (lines: string[]) => {
    const kept: string[] = [];
    for (const line of lines) {
      const cost = utf8Bytes(line) + 1;
      if (used + cost > maxBytes) break;
      kept.push(line);
      used += cost;
    }
    return kept;
  };
  const differingRows = take(rows.filter((_, i) => !shown[i]?.ok));
  const detailLines = differing.length ? [...DETAILS_HEADING, ...differing.flatMap(details)] : [];
  const keptDetails = take(detailLines);
  const matchingRows = take(rows.filter((_, i) => shown[i]?.ok));
  const hidden = shown.length - differingRows.length - matchingRows.length;
  const hiddenDiffering = differing.length - differingRows.length;
  const lines = [...head, ...differingRows, ...matchingRows];
  if (hidden > 0) {
    lines.push(
      '',
      hiddenDiffering === 0
        ? `${formatCount(hidden)} more tables match.`
        : `${formatCount(hidden)} more tables not shown, ${formatCount(hiddenDiffering)} of them differ: run validate --json for the full report.`,
    );
  }
  lines.push(...keptDetails);
  if (keptDetails.length < detailLines.length)
    lines.push('', 'More differences are in the validate --json output.');
  return `${lines.join('\n')}\n`;
}
