// Preflight report as text for the console.
import type { PreflightReport } from '../core/preflight';

export function renderPreflightText(report: PreflightReport): string {
  const lines = report.findings.map(
    (f) => `${f.severity.toUpperCase().padEnd(7)} ${f.code}: ${f.message}\n        fix: ${f.fix}`,
  );
  lines.push(report.ok ? 'Preflight passed.' : 'Preflight failed.');
  return `${lines.join('\n')}\n`;
}
