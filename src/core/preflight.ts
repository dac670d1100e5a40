// Preflight findings: each a stable code, a severity, what was observed and how to fix it.
// The checks themselves (computeFindings) are pure functions of facts the adapter gathers.

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  code: string;
  severity: Severity;
  /** What was observed (never a secret). */
  message: string;
  /** What to do: the SQL or setting to change. */
  fix: string;
}

export interface PreflightReport {
  ok: boolean;
  findings: Finding[];
}
