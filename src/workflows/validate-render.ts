// Validation report as a console table and as Markdown for a GitHub job summary.
import type { ValidationReport } from '../core/validation';

export function renderValidationText(report: ValidationReport): string {
  return `${report.tables.map((t) => `${t.table} ${t.sourceRows} ${t.targetRows}`).join('\n')}\n${report.ok ? 'OK' : 'MISMATCH'}\n`;
}

export function renderValidationMarkdown(report: ValidationReport): string {
  return `${report.ok ? 'OK' : 'MISMATCH'}\n`;
}
