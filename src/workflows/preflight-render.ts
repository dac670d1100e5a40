// The preflight report as text for the console (grouped by severity, each finding with its fix) and as
// a Markdown table for a GitHub job summary.
import type { Finding, PreflightReport, Severity } from '../core/preflight';

const HEADINGS: Record<Severity, string> = { error: 'Errors', warning: 'Warnings', info: 'Information' };
const MARKS: Record<Severity, string> = { error: '✗', warning: '!', info: '·' };
const ORDER: Severity[] = ['error', 'warning', 'info'];

export function renderPreflightText(report: PreflightReport): string {
  const lines: string[] = [`Preflight of migration '${report.migrationId}': ${summary(report)}.`];
  for (const severity of ORDER) {
    const group = report.findings.filter((f) => f.severity === severity);
    if (group.length === 0) continue;
    lines.push('', `${HEADINGS[severity]}:`);
    for (const f of group) {
      lines.push(`  ${MARKS[severity]} ${f.code}`);
      lines.push(...indent(f.message, '      '));
      if (severity !== 'info' || f.fix !== 'Nothing to do.') {
        lines.push(...indent(f.fix, '      fix: ', '           '));
      }
    }
  }
  lines.push(
    '',
    report.ok
      ? 'Preflight passed.'
      : `Preflight failed: fix the ${plural(report.counts.error, 'error')} above, then run preflight again.`,
  );
  return `${lines.join('\n')}\n`;
}

export function renderPreflightMarkdown(report: PreflightReport): string {
  const lines = [
    `### Preflight ${report.ok ? 'passed' : 'failed'}: migration \`${report.migrationId}\``,
    '',
    `${summary(report)}.`,
    '',
  ];
  if (report.findings.length > 0) {
    lines.push('| Severity | Code | Observed | Fix |', '| --- | --- | --- | --- |');
    for (const f of report.findings) lines.push(row(f));
    lines.push('');
  }
  return `${lines.join('\n')}`;
}

function row(f: Finding): string {
  const severity = { error: '❌ error', warning: '⚠️ warning', info: 'ℹ️ info' }[f.severity];
  return `| ${severity} | \`${f.code}\` | ${cell(f.message)} | ${cell(f.fix)} |`;
}

/** A table cell: no raw pipes, no HTML, newlines as <br>. */
function cell(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('|', '\\|')
    .replaceAll('\n', '<br>');
}

function summary(report: PreflightReport): string {
  const { error, warning, info } = report.counts;
  return `${plural(error, 'error')}, ${plural(warning, 'warning')}, ${info} informational`;
}

function indent(text: string, first: string, rest = first): string[] {
  return text.split('\n').map((line, i) => `${i === 0 ? first : rest}${line}`);
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
