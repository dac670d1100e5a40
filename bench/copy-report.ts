// The copy benchmark's report: per-tool metrics (rows/s, MB/s, peer/ours ratio) and its renderings as a
// terminal table and as Markdown. Pure: no I/O, so the numbers and the layout can be checked in isolation.
import type { DatabaseInventory } from './copy-dataset.js';

export const COPY_TOOLS = ['ours', 'pgdump', 'native', 'pgcopydb'] as const;
export type CopyTool = (typeof COPY_TOOLS)[number];

export const TOOL_LABELS: Record<CopyTool, string> = {
  ours: 'pg-live-migrate copy',
  pgdump: 'pg_dump -Fd | pg_restore',
  native: 'native logical replication',
  pgcopydb: 'pgcopydb clone',
};

export interface ToolRun {
  tool: CopyTool;
  status: 'ok' | 'failed' | 'skipped';
  /** Headline wall-clock seconds: schema + data + indexes, as the tool is meant to be used. */
  seconds?: number;
  /** Timed parts that add up to `seconds`, in the order they ran. */
  parts: { name: string; seconds: number }[];
  /** Peak RSS of the largest single client process (GNU time %M), KiB. */
  peakRssKiB?: number;
  commands: string[];
  notes: string[];
  /** Why the tool failed or was skipped. */
  error?: string;
}

export interface ToolResult extends ToolRun {
  rowsPerSecond?: number;
  megabytesPerSecond?: number;
  /** This tool's seconds divided by ours: above 1 means pg-live-migrate was faster. */
  ratioToOurs?: number;
}

export interface CopyReport {
  benchmark: 'copy';
  startedAt: string;
  finishedAt: string;
  machine: { cpus: number; memoryGiB: number; os: string; node: string; postgres: string; pgcopydb?: string };
  options: { scale: number; jobs: number; tools: CopyTool[] };
  clusterSettings: Record<string, string | number>;
  dataset: DatabaseInventory & { totalRows: number; generateSeconds: number };
  results: ToolResult[];
}

const BYTES_PER_MB = 1_000_000;

export function computeToolResults(runs: readonly ToolRun[], dataset: CopyReport['dataset']): ToolResult[] {
  const ours = runs.find((run) => run.tool === 'ours' && run.status === 'ok');
  return runs.map((run) => {
    if (run.status !== 'ok' || !run.seconds) return { ...run };
    return {
      ...run,
      rowsPerSecond: dataset.totalRows / run.seconds,
      megabytesPerSecond: dataset.databaseBytes / BYTES_PER_MB / run.seconds,
      ratioToOurs: ours?.seconds ? run.seconds / ours.seconds : undefined,
    };
  });
}

const formatCount = (value: number) => Math.round(value).toLocaleString('en-US');
const formatFixed = (value: number | undefined, digits: number) =>
  value === undefined ? '—' : value.toFixed(digits);
const formatMiB = (kib: number | undefined) => (kib === undefined ? '—' : (kib / 1024).toFixed(0));
const formatBytes = (bytes: number) => `${(bytes / BYTES_PER_MB).toFixed(1)} MB`;

function resultCells(result: ToolResult): string[] {
  const parts = result.parts.map((part) => `${part.name} ${part.seconds.toFixed(1)}s`).join(', ');
  return [
    result.tool,
    result.status,
    formatFixed(result.seconds, 1),
    result.rowsPerSecond === undefined ? '—' : formatCount(result.rowsPerSecond),
    formatFixed(result.megabytesPerSecond, 1),
    formatMiB(result.peakRssKiB),
    result.tool === 'ours' ? (result.status === 'ok' ? '1.00' : '—') : formatFixed(result.ratioToOurs, 2),
    result.status === 'ok' ? parts : (result.error?.split('\n')[0] ?? ''),
  ];
}

const RESULT_HEADER = ['tool', 'status', 'seconds', 'rows/s', 'MB/s', 'peak RSS MiB', 'peer/ours', 'parts'];

export function renderCopyTable(report: CopyReport): string {
  const rows = [RESULT_HEADER, ...report.results.map(resultCells)];
  const widths = RESULT_HEADER.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  const numeric = new Set([2, 3, 4, 5, 6]);
  const line = (row: string[]) =>
    row
      .map((cell, column) =>
        numeric.has(column) ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd();
  const { dataset, options } = report;
  return [
    `copy benchmark: scale ${options.scale}, jobs ${options.jobs}, ${formatCount(dataset.totalRows)} rows, ` +
      `${formatBytes(dataset.databaseBytes)} (pg_database_size of the source)`,
    line(rows[0] ?? []),
    line(widths.map((width) => '-'.repeat(width))),
    ...rows.slice(1).map(line),
    'peer/ours = peer seconds / our seconds: above 1 means pg-live-migrate was faster.',
  ].join('\n');
}

const escapeCell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', '<br>');

export function renderCopyMarkdown(report: CopyReport): string {
  const { dataset, machine, options } = report;
  const table = (header: string[], rows: string[][]) =>
    [
      `| ${header.join(' | ')} |`,
      `| ${header.map(() => '---').join(' | ')} |`,
      ...rows.map((row) => `| ${row.map(escapeCell).join(' | ')} |`),
    ].join('\n');
  const details = report.results.flatMap((result) => [
    `### ${result.tool}: ${TOOL_LABELS[result.tool]} (${result.status})`,
    '',
    ...(result.error ? ['```', result.error, '```', ''] : []),
    ...result.commands.map((command) => `- \`${command}\``),
    ...result.notes.map((note) => `- ${note}`),
    '',
  ]);
  return [
    `# Copy benchmark, ${report.startedAt}`,
    '',
    `Scale ${options.scale}, ${options.jobs} jobs per tool. Machine: ${machine.cpus} CPUs, ` +
      `${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, ${machine.postgres}` +
      `${machine.pgcopydb ? `, ${machine.pgcopydb}` : ''}.`,
    '',
    '## Results',
    '',
    table(RESULT_HEADER, report.results.map(resultCells)),
    '',
    'Seconds are wall-clock for schema + data + indexes. rows/s = all rows / seconds; MB/s = source ' +
      'pg_database_size (10^6 bytes) / seconds; peak RSS is the largest single client process (GNU time %M); ' +
      'peer/ours above 1 means pg-live-migrate was faster.',
    '',
    '## Dataset',
    '',
    `Generated in ${dataset.generateSeconds.toFixed(1)} s; ${formatCount(dataset.totalRows)} rows; ` +
      `source database ${formatBytes(dataset.databaseBytes)}.`,
    '',
    table(
      ['table', 'rows', 'size', 'indexes', 'constraints'],
      dataset.tables.map((t) => [
        t.name,
        formatCount(t.rows),
        formatBytes(t.totalBytes),
        String(t.indexes),
        String(t.constraints),
      ]),
    ),
    '',
    '## Tools',
    '',
    ...details,
    '## Cluster settings (source and every target)',
    '',
    ...Object.entries(report.clusterSettings).map(([key, value]) => `- \`${key} = ${value}\``),
    '',
  ].join('\n');
}
