// Validation results: per table row counts and order-independent checksums, the verdict, and their
// renderings (console table, Markdown for a job summary).

export interface TableValidation {
  table: string;
  sourceRows: number;
  targetRows: number;
  /** null when checksums were not requested. */
  checksumMatch: boolean | null;
  /** Key ranges whose checksums differ (bucket descriptions). */
  mismatchedRanges?: string[];
  /** The first keys found on one side only or with different contents. */
  firstDifferingKeys?: string[];
}

export interface ValidationReport {
  ok: boolean;
  /** How the source side was read: in the migration's snapshot, or live (the source must be quiet). */
  sourceMode: 'snapshot' | 'live';
  checksum: boolean;
  tables: TableValidation[];
}
