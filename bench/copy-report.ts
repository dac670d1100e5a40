// The copy benchmark's report: per-run metrics, per-tool summaries over the repeated rounds (median, min, max,
// peer/ours ratios of medians and within rounds) and their renderings as terminal tables and as Markdown.
// Pure: no I/O, so the numbers and the layout can be checked in isolation.
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
  /** 1-based round, and the 1-based place of this run within its round's order. */
  round: number;
  position: number;
  /** 1-minute load average when the run started: a slow run on a busy machine shows here. */
  loadAverageAtStart?: number;
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

export interface RunResult extends ToolRun {
  rowsPerSecond?: number;
  megabytesPerSecond?: number;
  /** This run's seconds / ours' seconds in the same round: above 1 means pg-live-migrate was faster. */
  ratioToOursInRound?: number;
}

export interface ToolSummary {
  tool: CopyTool;
  /** ok: every run ok; skipped: every run skipped; failed: anything else (the numbers cover the ok runs). */
  status: 'ok' | 'failed' | 'skipped';
  runs: number;
  okRuns: number;
  medianSeconds?: number;
  minSeconds?: number;
  maxSeconds?: number;
  medianRowsPerSecond?: number;
  medianMegabytesPerSecond?: number;
  maxPeakRssKiB?: number;
  /** This tool's median seconds / ours' median seconds: above 1 means pg-live-migrate was faster. */
  medianRatioToOurs?: number;
  /** For each round where this tool and ours both ran ok: its seconds / ours' seconds in that round. */
  roundRatios: { round: number; ratio: number }[];
  /** The median of `roundRatios`: drifts of machine load between rounds cancel out of it. */
  medianRoundRatio?: number;
}

/** The three load averages of /proc/loadavg (1, 5 and 15 minutes). */
export type LoadAverages = [number, number, number];

/** The machine and versions a benchmark ran on, with the load before and after. */
export interface Machine {
  cpus: number;
  memoryGiB: number;
  os: string;
  node: string;
  postgres: string;
  pgcopydb?: string;
  loadAverages: { atStart: LoadAverages; atEnd: LoadAverages };
}

export interface CopyReport {
  benchmark: 'copy';
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  options: { scale: number; jobs: number; repeat: number; tools: CopyTool[] };
  /** The order the tools ran in, one list per round. */
  rounds: CopyTool[][];
  clusterSettings: Record<string, string | number>;
  dataset: DatabaseInventory & { totalRows: number; generateSeconds: number };
  summary: ToolSummary[];
  /** Every run of every round, in the order they ran. */
  runs: RunResult[];
}

const BYTES_PER_MB = 1_000_000;

/**
 * Round r (0-based) runs the tools rotated left by r: ours, pgdump, native, pgcopydb, then pgdump, native,
 * pgcopydb, ours, and so on. Each tool takes every place in turn, so none always runs first (cold) or last.
 */
export function buildRoundOrder<Tool>(tools: readonly Tool[], round: number): Tool[] {
  const shift = tools.length === 0 ? 0 : round % tools.length;
  return [...tools.slice(shift), ...tools.slice(0, shift)];
}

/** The middle value (the mean of the two middle ones for an even count); undefined for none. */
export function computeMedian(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle] as number;
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] as number) + upper) / 2;
}

const okSeconds = (run: ToolRun): number | undefined =>
  run.status === 'ok' && run.seconds ? run.seconds : undefined;

export function computeCopyResults(
  runs: readonly ToolRun[],
  tools: readonly CopyTool[],
  dataset: CopyReport['dataset'],
): { runs: RunResult[]; summary: ToolSummary[] } {
  const oursByRound = new Map<number, number>();
  for (const run of runs) {
    const seconds = okSeconds(run);
    if (run.tool === 'ours' && seconds !== undefined) oursByRound.set(run.round, seconds);
  }
  const results: RunResult[] = runs.map((run) => {
    const seconds = okSeconds(run);
    if (seconds === undefined) return { ...run };
    const ours = oursByRound.get(run.round);
    return {
      ...run,
      rowsPerSecond: dataset.totalRows / seconds,
      megabytesPerSecond: dataset.databaseBytes / BYTES_PER_MB / seconds,
      ratioToOursInRound: ours === undefined ? undefined : seconds / ours,
    };
  });
  const summarize = (tool: CopyTool): Omit<ToolSummary, 'medianRatioToOurs'> => {
    const mine = results.filter((run) => run.tool === tool);
    const ok = mine.filter((run) => okSeconds(run) !== undefined);
    const seconds = ok.map((run) => run.seconds as number);
    const rss = mine.flatMap((run) => (run.peakRssKiB === undefined ? [] : [run.peakRssKiB]));
    const roundRatios = ok.flatMap((run) =>
      run.ratioToOursInRound === undefined ? [] : [{ round: run.round, ratio: run.ratioToOursInRound }],
    );
    return {
      tool,
      status:
        ok.length === mine.length && mine.length > 0
          ? 'ok'
          : mine.every((run) => run.status === 'skipped')
            ? 'skipped'
            : 'failed',
      runs: mine.length,
      okRuns: ok.length,
      medianSeconds: computeMedian(seconds),
      minSeconds: seconds.length > 0 ? Math.min(...seconds) : undefined,
      maxSeconds: seconds.length > 0 ? Math.max(...seconds) : undefined,
      medianRowsPerSecond: computeMedian(ok.map((run) => run.rowsPerSecond as number)),
      medianMegabytesPerSecond: computeMedian(ok.map((run) => run.megabytesPerSecond as number)),
      maxPeakRssKiB: rss.length > 0 ? Math.max(...rss) : undefined,
      roundRatios,
      medianRoundRatio: computeMedian(roundRatios.map((entry) => entry.ratio)),
    };
  };
  const partial = tools.map(summarize);
  const oursMedian = partial.find((summary) => summary.tool === 'ours')?.medianSeconds;
  const summary = partial.map((entry) => ({
    ...entry,
    medianRatioToOurs:
      entry.medianSeconds !== undefined && oursMedian !== undefined
        ? entry.medianSeconds / oursMedian
        : undefined,
  }));
  return { runs: results, summary };
}

const formatCount = (value: number | undefined) =>
  value === undefined ? '—' : Math.round(value).toLocaleString('en-US');
const formatFixed = (value: number | undefined, digits: number) =>
  value === undefined ? '—' : value.toFixed(digits);
const formatMiB = (kib: number | undefined) => (kib === undefined ? '—' : (kib / 1024).toFixed(0));
const formatBytes = (bytes: number) => `${(bytes / BYTES_PER_MB).toFixed(1)} MB`;
const formatLoad = (load: LoadAverages) => load.map((value) => value.toFixed(2)).join(' ');
const firstLine = (text: string | undefined) => text?.split('\n')[0] ?? '';

export interface Table {
  header: string[];
  rows: string[][];
  /** Columns right-aligned in the terminal. */
  numeric: ReadonlySet<number>;
}

const SUMMARY_HEADER = [
  'tool',
  'ok runs',
  'median s',
  'min s',
  'max s',
  'rows/s',
  'MB/s',
  'peak RSS MiB',
  'peer/ours',
  'per-round peer/ours',
  'per-round ratios',
];

function buildSummaryTable(report: CopyReport): Table {
  const rows = report.summary.map((summary) => {
    const isOurs = summary.tool === 'ours';
    const oursOk = isOurs && summary.okRuns > 0;
    return [
      summary.tool,
      `${summary.okRuns}/${summary.runs}`,
      formatFixed(summary.medianSeconds, 1),
      formatFixed(summary.minSeconds, 1),
      formatFixed(summary.maxSeconds, 1),
      formatCount(summary.medianRowsPerSecond),
      formatFixed(summary.medianMegabytesPerSecond, 1),
      formatMiB(summary.maxPeakRssKiB),
      oursOk ? '1.00' : formatFixed(summary.medianRatioToOurs, 2),
      oursOk ? '1.00' : formatFixed(summary.medianRoundRatio, 2),
      isOurs ? '' : summary.roundRatios.map((entry) => entry.ratio.toFixed(2)).join(' '),
    ];
  });
  return { header: SUMMARY_HEADER, rows, numeric: new Set([2, 3, 4, 5, 6, 7, 8, 9]) };
}

/** One row per round: each tool's seconds, peers with their ratio to ours in that round. */
function buildRoundTable(report: CopyReport): Table {
  const tools = report.options.tools;
  const rows = report.rounds.map((order, index) => {
    const round = index + 1;
    const cells = tools.map((tool) => {
      const run = report.runs.find((entry) => entry.round === round && entry.tool === tool);
      if (!run) return '—';
      if (run.status !== 'ok' || run.seconds === undefined) return run.status;
      const ratio = tool === 'ours' ? '' : ` (${formatFixed(run.ratioToOursInRound, 2)})`;
      return `${run.seconds.toFixed(1)}${ratio}`;
    });
    const loads = report.runs
      .filter((entry) => entry.round === round && entry.loadAverageAtStart !== undefined)
      .map((entry) => entry.loadAverageAtStart as number);
    const loadRange =
      loads.length > 0 ? `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}` : '—';
    return [String(round), order.join(', '), ...cells, loadRange];
  });
  return {
    header: ['round', 'order', ...tools, 'load 1m'],
    rows,
    numeric: new Set(tools.map((_, column) => column + 2)),
  };
}

function buildRunsTable(report: CopyReport): Table {
  const rows = report.runs.map((run) => [
    String(run.round),
    String(run.position),
    run.tool,
    run.status,
    formatFixed(run.seconds, 1),
    formatCount(run.rowsPerSecond),
    formatFixed(run.megabytesPerSecond, 1),
    formatMiB(run.peakRssKiB),
    run.tool === 'ours' ? '' : formatFixed(run.ratioToOursInRound, 2),
    formatFixed(run.loadAverageAtStart, 2),
    run.status === 'ok'
      ? run.parts.map((part) => `${part.name} ${part.seconds.toFixed(1)}s`).join(', ')
      : firstLine(run.error),
  ]);
  return {
    header: [
      'round',
      'place',
      'tool',
      'status',
      'seconds',
      'rows/s',
      'MB/s',
      'peak RSS MiB',
      'peer/ours in round',
      'load 1m',
      'parts',
    ],
    rows,
    numeric: new Set([0, 1, 4, 5, 6, 7, 8, 9]),
  };
}

export function renderTextTable(table: Table): string {
  const all = [table.header, ...table.rows];
  const widths = table.header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  const line = (row: string[]) =>
    row
      .map((cell, column) =>
        table.numeric.has(column) ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [line(table.header), line(widths.map((width) => '-'.repeat(width))), ...table.rows.map(line)].join(
    '\n',
  );
}

const escapeCell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', '<br>');

export function renderMarkdownTable(table: Table): string {
  return [
    `| ${table.header.join(' | ')} |`,
    `| ${table.header.map((_, column) => (table.numeric.has(column) ? '---:' : '---')).join(' | ')} |`,
    ...table.rows.map((row) => `| ${row.map(escapeCell).join(' | ')} |`),
  ].join('\n');
}

function describeHeadline(report: CopyReport): string {
  const { dataset, options } = report;
  return (
    `scale ${options.scale}, jobs ${options.jobs}, ${options.repeat} round(s), ` +
    `${formatCount(dataset.totalRows)} rows, ${formatBytes(dataset.databaseBytes)} (pg_database_size of the source)`
  );
}

const RATIO_LEGEND =
  'peer/ours = peer median seconds / our median seconds; per-round peer/ours = median over the rounds of ' +
  '(peer seconds / our seconds in the same round). Above 1 means pg-live-migrate was faster.';

export function renderCopyTable(report: CopyReport): string {
  const { loadAverages } = report.machine;
  return [
    `copy benchmark: ${describeHeadline(report)}`,
    renderTextTable(buildSummaryTable(report)),
    RATIO_LEGEND,
    '',
    'seconds per round (peer/ours in that round):',
    renderTextTable(buildRoundTable(report)),
    '',
    `load average (1/5/15 min): ${formatLoad(loadAverages.atStart)} at start, ${formatLoad(loadAverages.atEnd)} at end`,
  ].join('\n');
}

/** Notes and commands that are the same in every round are listed once; errors keep their round. */
function renderToolDetails(report: CopyReport): string[] {
  return report.options.tools.flatMap((tool) => {
    const runs = report.runs.filter((run) => run.tool === tool);
    const summary = report.summary.find((entry) => entry.tool === tool);
    const commands = runs[0]?.commands ?? [];
    const notes = [...new Set(runs.flatMap((run) => run.notes))];
    const errors = runs.filter((run) => run.error);
    return [
      `### ${tool}: ${TOOL_LABELS[tool]} (${summary?.status ?? 'not run'}, ${summary?.okRuns ?? 0}/${runs.length} ok)`,
      '',
      ...(commands.length > 0 ? ['Commands (round 1; ports and paths differ per round):', ''] : []),
      ...commands.map((command) => `- \`${command}\``),
      ...(commands.length > 0 ? [''] : []),
      ...notes.map((note) => `- ${note}`),
      '',
      ...errors.flatMap((run) => [
        `Round ${run.round} (${run.status}):`,
        '',
        '```',
        run.error ?? '',
        '```',
        '',
      ]),
    ];
  });
}

export function renderCopyMarkdown(report: CopyReport): string {
  const { dataset, machine, options } = report;
  return [
    `# Copy benchmark, ${report.startedAt}`,
    '',
    `Scale ${options.scale}, ${options.jobs} jobs per tool, ${options.repeat} round(s). Machine: ${machine.cpus} CPUs, ` +
      `${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, ${machine.postgres}` +
      `${machine.pgcopydb ? `, ${machine.pgcopydb}` : ''}. Load average (1/5/15 min): ` +
      `${formatLoad(machine.loadAverages.atStart)} at start, ${formatLoad(machine.loadAverages.atEnd)} at end.`,
    '',
    '## Summary',
    '',
    renderMarkdownTable(buildSummaryTable(report)),
    '',
    'Seconds are wall-clock for schema + data + indexes; median, min and max are over the ok runs. ' +
      'rows/s = all rows / seconds and MB/s = source pg_database_size (10^6 bytes) / seconds, each the median ' +
      'over the runs; peak RSS is the largest single client process (GNU time %M) of any run. ' +
      `${RATIO_LEGEND} The per-round ratios are listed in round order.`,
    '',
    '## Rounds',
    '',
    'Seconds of each run, with the peer/ours ratio of that round; load 1m is the range of the 1-minute load ' +
      'average at the start of the round’s runs.',
    '',
    renderMarkdownTable(buildRoundTable(report)),
    '',
    '## Every run',
    '',
    renderMarkdownTable(buildRunsTable(report)),
    '',
    '## Dataset',
    '',
    `Generated once, before round 1, in ${dataset.generateSeconds.toFixed(1)} s; ` +
      `${formatCount(dataset.totalRows)} rows; source database ${formatBytes(dataset.databaseBytes)}.`,
    '',
    renderMarkdownTable({
      header: ['table', 'rows', 'size', 'indexes', 'constraints'],
      rows: dataset.tables.map((t) => [
        t.name,
        formatCount(t.rows),
        formatBytes(t.totalBytes),
        String(t.indexes),
        String(t.constraints),
      ]),
      numeric: new Set([1, 2, 3, 4]),
    }),
    '',
    '## Tools',
    '',
    ...renderToolDetails(report),
    '## Cluster settings (source and every target)',
    '',
    ...Object.entries(report.clusterSettings).map(([key, value]) => `- \`${key} = ${value}\``),
    '',
  ].join('\n');
}
