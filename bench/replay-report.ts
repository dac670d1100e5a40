// The replay benchmark's report: per-run results (keep-up lag, backlog drain), per-tool medians over the
// rounds, peer/ours ratios, the issue's targets checked against our numbers, and their renderings as terminal
// tables and as Markdown. Pure: no I/O.
import {
  computeMedian,
  type LoadAverages,
  type Machine,
  renderMarkdownTable,
  renderTextTable,
  type Table,
} from './copy-report.js';
import type { LagSummary } from './replay-lag.js';
import { REPLAY_TOOL_LABELS, type ReplayTool } from './replay-peers.js';

export interface KeepUpResult {
  /** pgbench -T, seconds. */
  seconds: number;
  pgbenchTps?: number;
  /** Lag of the applied position, over the samples taken while pgbench ran. */
  lag?: LagSummary;
  /** Lag of the slot's confirmed_flush_lsn on the source (what the tool acknowledged), same window. */
  confirmedLag?: LagSummary;
  /** Seconds from the end of the writes until the marker written after them was on the target. */
  catchUpSeconds?: number;
  /** One point a second while pgbench ran: [seconds since start, lag bytes, lag seconds]. */
  series: [number, number, number][];
}

export interface BacklogPart {
  rows: number;
  transactions: number;
  /** Seconds the source took to write the backlog (the replay stopped meanwhile). */
  generateSeconds: number;
  /** Source WAL written by the backlog. */
  walBytes: number;
  /** Seconds from the resume until the marker written after the backlog was on the target. */
  drainSeconds?: number;
  rowsPerSecond?: number;
  /** CPU seconds (user + system) the tool's client process(es) used during the drain. */
  toolCpuSeconds?: number;
}

export interface BacklogResult {
  inserts?: BacklogPart;
  updatesDeletes?: BacklogPart;
  /** Both parts: all rows / both drain times; set only when both drained. */
  totalRows: number;
  drainSeconds?: number;
  rowsPerSecond?: number;
}

export interface ReplayRun {
  tool: ReplayTool;
  round: number;
  position: number;
  loadAverageAtStart?: number;
  status: 'ok' | 'failed' | 'skipped';
  /** Seconds from the start of the tool until the first marker was on the target (copy + catch-up). */
  setupSeconds?: number;
  keepUp?: KeepUpResult;
  backlog?: BacklogResult;
  /** Memory per phase (see the tool's memory metric), KiB. */
  memoryKiB: { setupAndKeepUp?: number; insertsDrain?: number; updatesDeletesDrain?: number };
  peakMemoryKiB?: number;
  commands: string[];
  notes: string[];
  error?: string;
}

export interface ReplayToolSummary {
  tool: ReplayTool;
  status: 'ok' | 'failed' | 'skipped';
  runs: number;
  okRuns: number;
  /** Medians over the runs whose keep-up phase caught up. */
  keepUpRuns: number;
  tps?: number;
  lagSeconds?: { p50?: number; p99?: number; max?: number };
  lagBytes?: { p50?: number; p99?: number; max?: number };
  confirmedLagSecondsP99?: number;
  catchUpSeconds?: number;
  /** Medians over the runs whose part drained. */
  insertsDrainSeconds?: number;
  insertsPerSecond?: number;
  updatesDeletesDrainSeconds?: number;
  updatesDeletesPerSecond?: number;
  totalDrainSeconds?: number;
  totalRowsPerSecond?: number;
  /** The highest of the runs' memory peaks, KiB. */
  peakMemoryKiB?: number;
  /** Peer median drain seconds / ours: above 1 means pg-live-migrate drained faster. */
  drainRatio?: { inserts?: number; updatesDeletes?: number; total?: number };
  /** Per round where both drained: peer total drain seconds / ours. */
  roundRatios: { round: number; ratio: number }[];
  medianRoundRatio?: number;
  /** Peer median p99 lag seconds / ours. */
  lagP99Ratio?: number;
}

export interface TargetCheck {
  target: string;
  observed: string;
  verdict: 'met' | 'missed' | 'unknown';
}

export interface ReplayReport {
  benchmark: 'replay';
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  /** What `ours` ran: the sha256 of the dist/cli.js copied at the start, and the git state of the work tree. */
  build: { cliSha256?: string; gitHead?: string; gitDirty?: string[] };
  options: {
    scale: number;
    jobs: number;
    repeat: number;
    keepUpSeconds: number;
    backlogInserts: number;
    tools: ReplayTool[];
  };
  workload: { pgbench: string; backlog: string[]; sampleIntervalMs: number };
  /** Per tool: where its applied position is read, and what its memory number is. */
  measurement: Record<string, { appliedPosition: string; memory?: string }>;
  rounds: ReplayTool[][];
  clusterSettings: Record<string, string | number>;
  dataset: { generateSeconds: number; databaseBytes: number };
  summary: ReplayToolSummary[];
  targets: TargetCheck[];
  runs: ReplayRun[];
}

const median = (values: (number | undefined)[]) =>
  computeMedian(values.filter((value): value is number => value !== undefined));

const ratio = (peer: number | undefined, ours: number | undefined) =>
  peer !== undefined && ours !== undefined && ours > 0 ? peer / ours : undefined;

export function summarizeReplayRuns(
  runs: readonly ReplayRun[],
  tools: readonly ReplayTool[],
): ReplayToolSummary[] {
  const oursTotals = new Map<number, number>();
  for (const run of runs) {
    if (run.tool === 'ours' && run.status === 'ok' && run.backlog?.drainSeconds !== undefined)
      oursTotals.set(run.round, run.backlog.drainSeconds);
  }
  const partial = tools.map((tool): ReplayToolSummary => {
    const mine = runs.filter((run) => run.tool === tool);
    const caughtUp = mine.filter((run) => run.keepUp?.catchUpSeconds !== undefined && run.keepUp.lag);
    const lags = caughtUp.map((run) => run.keepUp?.lag as LagSummary);
    // Drain times count only for runs whose target then matched the source.
    const checked = mine.filter((run) => run.status === 'ok');
    const inserts = checked.flatMap((run) =>
      run.backlog?.inserts?.drainSeconds ? [run.backlog.inserts] : [],
    );
    const changes = checked.flatMap((run) =>
      run.backlog?.updatesDeletes?.drainSeconds ? [run.backlog.updatesDeletes] : [],
    );
    const totals = checked.flatMap((run) => (run.backlog?.drainSeconds ? [run.backlog] : []));
    const memory = mine.flatMap((run) => (run.peakMemoryKiB === undefined ? [] : [run.peakMemoryKiB]));
    const roundRatios = checked.flatMap((run) => {
      const ours = oursTotals.get(run.round);
      const seconds = run.backlog?.drainSeconds;
      return tool === 'ours' || ours === undefined || seconds === undefined
        ? []
        : [{ round: run.round, ratio: seconds / ours }];
    });
    const okRuns = mine.filter((run) => run.status === 'ok').length;
    return {
      tool,
      status:
        okRuns === mine.length && mine.length > 0
          ? 'ok'
          : mine.length > 0 && mine.every((run) => run.status === 'skipped')
            ? 'skipped'
            : 'failed',
      runs: mine.length,
      okRuns,
      keepUpRuns: caughtUp.length,
      tps: median(caughtUp.map((run) => run.keepUp?.pgbenchTps)),
      lagSeconds:
        lags.length > 0
          ? {
              p50: median(lags.map((lag) => lag.seconds.p50)),
              p99: median(lags.map((lag) => lag.seconds.p99)),
              max: median(lags.map((lag) => lag.seconds.max)),
            }
          : undefined,
      lagBytes:
        lags.length > 0
          ? {
              p50: median(lags.map((lag) => lag.bytes.p50)),
              p99: median(lags.map((lag) => lag.bytes.p99)),
              max: median(lags.map((lag) => lag.bytes.max)),
            }
          : undefined,
      confirmedLagSecondsP99: median(caughtUp.map((run) => run.keepUp?.confirmedLag?.seconds.p99)),
      catchUpSeconds: median(caughtUp.map((run) => run.keepUp?.catchUpSeconds)),
      insertsDrainSeconds: median(inserts.map((part) => part.drainSeconds)),
      insertsPerSecond: median(inserts.map((part) => part.rowsPerSecond)),
      updatesDeletesDrainSeconds: median(changes.map((part) => part.drainSeconds)),
      updatesDeletesPerSecond: median(changes.map((part) => part.rowsPerSecond)),
      totalDrainSeconds: median(totals.map((backlog) => backlog.drainSeconds)),
      totalRowsPerSecond: median(totals.map((backlog) => backlog.rowsPerSecond)),
      peakMemoryKiB: memory.length > 0 ? Math.max(...memory) : undefined,
      roundRatios,
      medianRoundRatio: computeMedian(roundRatios.map((entry) => entry.ratio)),
    };
  });
  const ours = partial.find((summary) => summary.tool === 'ours');
  return partial.map((summary) =>
    summary.tool === 'ours'
      ? summary
      : {
          ...summary,
          drainRatio: {
            inserts: ratio(summary.insertsDrainSeconds, ours?.insertsDrainSeconds),
            updatesDeletes: ratio(summary.updatesDeletesDrainSeconds, ours?.updatesDeletesDrainSeconds),
            total: ratio(summary.totalDrainSeconds, ours?.totalDrainSeconds),
          },
          lagP99Ratio: ratio(summary.lagSeconds?.p99, ours?.lagSeconds?.p99),
        },
  );
}

/** RSS limit of the issue, "300 MB", read as 300 × 10^6 bytes. */
const RSS_LIMIT_KIB = 300e6 / 1024;

/** The issue's targets, each checked against our runs (worst run for limits, medians for rates). */
export function checkReplayTargets(
  runs: readonly ReplayRun[],
  summary: readonly ReplayToolSummary[],
): TargetCheck[] {
  const ours = runs.filter((run) => run.tool === 'ours');
  const oursSummary = summary.find((entry) => entry.tool === 'ours');
  const native = summary.find((entry) => entry.tool === 'native');
  const p99s = ours.flatMap((run) => (run.keepUp?.lag ? [run.keepUp.lag.seconds.p99] : []));
  const insertRates = ours.flatMap((run) =>
    run.backlog?.inserts?.rowsPerSecond ? [run.backlog.inserts.rowsPerSecond] : [],
  );
  const verdict = (known: boolean, met: boolean): TargetCheck['verdict'] =>
    known ? (met ? 'met' : 'missed') : 'unknown';
  const worstP99 = p99s.length > 0 ? Math.max(...p99s) : undefined;
  const slowestInserts = insertRates.length > 0 ? Math.min(...insertRates) : undefined;
  const nativeRatio = native?.drainRatio?.total;
  const peak = oursSummary?.peakMemoryKiB;
  return [
    {
      target: 'keep-up: p99 lag under 1 s (every run)',
      observed:
        worstP99 === undefined
          ? 'no keep-up result'
          : `worst run p99 ${worstP99.toFixed(2)} s (runs: ${p99s.map((value) => value.toFixed(2)).join(', ')})`,
      verdict: verdict(worstP99 !== undefined, (worstP99 ?? 0) < 1),
    },
    {
      target: 'backlog: at least 60,000 inserts/s (every run)',
      observed:
        slowestInserts === undefined
          ? 'no drained insert backlog'
          : `slowest run ${formatCount(slowestInserts)}/s (runs: ${insertRates.map(formatCount).join(', ')})`,
      verdict: verdict(slowestInserts !== undefined, (slowestInserts ?? 0) >= 60_000),
    },
    {
      target: 'backlog: drain at least as fast as native (native s / ours s ≥ 1; aim 1.5)',
      observed:
        nativeRatio === undefined
          ? 'no ratio (native or ours did not drain)'
          : `native/ours ${nativeRatio.toFixed(2)} (per round: ${
              native?.roundRatios.map((entry) => entry.ratio.toFixed(2)).join(', ') || '—'
            })${nativeRatio >= 1.5 ? ', aim of 1.5 reached' : ', aim of 1.5 not reached'}`,
      verdict: verdict(nativeRatio !== undefined, (nativeRatio ?? 0) >= 1),
    },
    {
      target: 'RSS under 300 MB (10^6 bytes; every run and phase)',
      observed:
        peak === undefined
          ? 'not measured'
          : `peak ${formatMiB(peak)} MiB (${((peak * 1024) / 1e6).toFixed(0)} MB)`,
      verdict: verdict(peak !== undefined, (peak ?? 0) < RSS_LIMIT_KIB),
    },
  ];
}

const formatCount = (value: number | undefined) =>
  value === undefined ? '—' : Math.round(value).toLocaleString('en-US');
const formatFixed = (value: number | undefined, digits: number) =>
  value === undefined ? '—' : value.toFixed(digits);
const formatMiB = (kib: number | undefined) => (kib === undefined ? '—' : (kib / 1024).toFixed(0));
/** Bytes below 1 kB, kB (10^3) below 1 MB, else MB (10^6). */
export const formatLagBytes = (bytes: number | undefined) =>
  bytes === undefined
    ? '—'
    : bytes < 1e3
      ? `${Math.round(bytes)} B`
      : bytes < 1e6
        ? `${(bytes / 1e3).toFixed(1)} kB`
        : `${(bytes / 1e6).toFixed(2)} MB`;
const formatLoad = (load: LoadAverages) => load.map((value) => value.toFixed(2)).join(' ');
const firstLine = (text: string | undefined) => text?.split('\n')[0] ?? '';
const ratioCell = (summary: ReplayToolSummary, value: number | undefined) =>
  summary.tool === 'ours' ? (summary.okRuns > 0 ? '1.00' : '—') : formatFixed(value, 2);

function buildKeepUpTable(report: ReplayReport): Table {
  const rows = report.summary.map((summary) => [
    summary.tool,
    `${summary.keepUpRuns}/${summary.runs}`,
    formatCount(summary.tps),
    formatFixed(summary.lagSeconds?.p50, 3),
    formatFixed(summary.lagSeconds?.p99, 3),
    formatFixed(summary.lagSeconds?.max, 3),
    formatLagBytes(summary.lagBytes?.p50),
    formatLagBytes(summary.lagBytes?.p99),
    formatLagBytes(summary.lagBytes?.max),
    formatFixed(summary.catchUpSeconds, 2),
    formatFixed(summary.confirmedLagSecondsP99, 2),
    ratioCell(summary, summary.lagP99Ratio),
  ]);
  return {
    header: [
      'tool',
      'caught up',
      'pgbench tps',
      'lag s p50',
      'lag s p99',
      'lag s max',
      'lag p50',
      'lag p99',
      'lag max',
      'catch-up s',
      'slot lag s p99',
      'p99 s peer/ours',
    ],
    rows,
    numeric: new Set([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
  };
}

function buildBacklogTable(report: ReplayReport): Table {
  const rows = report.summary.map((summary) => [
    summary.tool,
    `${summary.okRuns}/${summary.runs}`,
    formatFixed(summary.insertsDrainSeconds, 1),
    formatCount(summary.insertsPerSecond),
    formatFixed(summary.updatesDeletesDrainSeconds, 1),
    formatCount(summary.updatesDeletesPerSecond),
    formatFixed(summary.totalDrainSeconds, 1),
    formatCount(summary.totalRowsPerSecond),
    ratioCell(summary, summary.drainRatio?.inserts),
    ratioCell(summary, summary.drainRatio?.total),
    ratioCell(summary, summary.medianRoundRatio),
    summary.tool === 'ours' ? '' : summary.roundRatios.map((entry) => entry.ratio.toFixed(2)).join(' '),
    formatMiB(summary.peakMemoryKiB),
  ]);
  return {
    header: [
      'tool',
      'ok runs',
      'inserts s',
      'inserts/s',
      'upd+del s',
      'upd+del rows/s',
      'total s',
      'rows/s',
      'inserts peer/ours',
      'total peer/ours',
      'per-round peer/ours',
      'per-round ratios',
      'peak mem MiB',
    ],
    rows,
    numeric: new Set([2, 3, 4, 5, 6, 7, 8, 9, 10, 12]),
  };
}

function buildTargetsTable(report: ReplayReport): Table {
  return {
    header: ['target (ours)', 'observed', 'verdict'],
    rows: report.targets.map((check) => [check.target, check.observed, check.verdict]),
    numeric: new Set(),
  };
}

function buildRunsTable(report: ReplayReport): Table {
  const rows = report.runs.map((run) => [
    String(run.round),
    String(run.position),
    run.tool,
    run.status,
    formatFixed(run.loadAverageAtStart, 2),
    formatFixed(run.setupSeconds, 1),
    formatCount(run.keepUp?.pgbenchTps),
    formatFixed(run.keepUp?.lag?.seconds.p50, 3),
    formatFixed(run.keepUp?.lag?.seconds.p99, 3),
    formatFixed(run.keepUp?.lag?.seconds.max, 3),
    formatLagBytes(run.keepUp?.lag?.bytes.p99),
    formatLagBytes(run.keepUp?.lag?.bytes.max),
    formatFixed(run.keepUp?.catchUpSeconds, 2),
    formatFixed(run.backlog?.inserts?.drainSeconds, 1),
    formatCount(run.backlog?.inserts?.rowsPerSecond),
    formatFixed(run.backlog?.updatesDeletes?.drainSeconds, 1),
    formatCount(run.backlog?.updatesDeletes?.rowsPerSecond),
    formatCount(run.backlog?.rowsPerSecond),
    run.backlog?.inserts?.toolCpuSeconds === undefined
      ? '—'
      : `${formatFixed(run.backlog.inserts.toolCpuSeconds, 1)} / ${formatFixed(run.backlog.updatesDeletes?.toolCpuSeconds, 1)}`,
    formatMiB(run.peakMemoryKiB),
    run.status === 'ok' ? '' : firstLine(run.error),
  ]);
  return {
    header: [
      'round',
      'place',
      'tool',
      'status',
      'load 1m',
      'setup s',
      'tps',
      'lag s p50',
      'lag s p99',
      'lag s max',
      'lag p99',
      'lag max',
      'catch-up s',
      'inserts s',
      'inserts/s',
      'upd+del s',
      'upd+del rows/s',
      'rows/s',
      'tool CPU s ins / upd+del',
      'peak mem MiB',
      'error',
    ],
    rows,
    numeric: new Set([0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
  };
}

function describeHeadline(report: ReplayReport): string {
  const { options } = report;
  return (
    `pgbench scale ${options.scale}, ${options.keepUpSeconds} s keep-up, backlog ${formatCount(options.backlogInserts)} ` +
    `inserts + ${formatCount(options.backlogInserts / 2)} updates + ${formatCount(options.backlogInserts / 2)} deletes, ` +
    `${options.repeat} round(s), ${options.jobs} jobs for the initial copy`
  );
}

const LEGEND =
  'Lag: lag bytes = source pg_current_wal_lsn() − the applied position; lag s = time since the source first wrote ' +
  'past the applied position; p50/p99/max over the samples taken every 200 ms while pgbench ran, median over the rounds. ' +
  'slot lag s p99: the same for the slot’s confirmed_flush_lsn on the source. Drain: seconds from the resume until a ' +
  'marker row written after the backlog is on the target; drain medians only over runs whose target then matched ' +
  'the source (ok runs), keep-up medians over the runs that caught up. peer/ours = peer seconds / our seconds: above 1 means ' +
  'pg-live-migrate was faster.';

export function renderReplayTable(report: ReplayReport): string {
  const { loadAverages } = report.machine;
  return [
    `replay benchmark: ${describeHeadline(report)}`,
    '',
    'keep-up (pgbench TPC-B -c4 -j2 on the source):',
    renderTextTable(buildKeepUpTable(report)),
    '',
    'backlog (written while the replay was stopped, then drained):',
    renderTextTable(buildBacklogTable(report)),
    '',
    renderTextTable(buildTargetsTable(report)),
    '',
    LEGEND,
    '',
    'every run:',
    renderTextTable(buildRunsTable(report)),
    '',
    `load average (1/5/15 min): ${formatLoad(loadAverages.atStart)} at start, ${formatLoad(loadAverages.atEnd)} at end`,
  ].join('\n');
}

function renderToolDetails(report: ReplayReport): string[] {
  return report.options.tools.flatMap((tool) => {
    const runs = report.runs.filter((run) => run.tool === tool);
    const summary = report.summary.find((entry) => entry.tool === tool);
    const commands = runs[0]?.commands ?? [];
    const notes = [...new Set(runs.flatMap((run) => run.notes))];
    const measurement = report.measurement[tool];
    return [
      `### ${tool}: ${REPLAY_TOOL_LABELS[tool]} (${summary?.status ?? 'not run'}, ${summary?.okRuns ?? 0}/${runs.length} ok)`,
      '',
      ...(measurement ? [`- Applied position: ${measurement.appliedPosition}.`] : []),
      ...(measurement?.memory ? [`- Memory: ${measurement.memory}.`] : []),
      ...(commands.length > 0 ? ['', 'Commands (ports and paths differ per run):', ''] : []),
      ...commands.map((command) => `- \`${command}\``),
      '',
      ...notes.map((note) => `- ${note}`),
      '',
      ...runs
        .filter((run) => run.error)
        .flatMap((run) => [`Round ${run.round} (${run.status}):`, '', '```', run.error ?? '', '```', '']),
    ];
  });
}

export function renderReplayMarkdown(report: ReplayReport): string {
  const { machine, build } = report;
  return [
    `# Replay benchmark, ${report.startedAt}`,
    '',
    `${describeHeadline(report)}. Machine: ${machine.cpus} CPUs, ${machine.memoryGiB} GiB, ${machine.os}, ` +
      `Node ${machine.node}, ${machine.postgres}${machine.pgcopydb ? `, ${machine.pgcopydb}` : ''}. ` +
      `Load average (1/5/15 min): ${formatLoad(machine.loadAverages.atStart)} at start, ` +
      `${formatLoad(machine.loadAverages.atEnd)} at end. ours: dist/cli.js sha256 ${build.cliSha256 ?? '—'}, ` +
      `git ${build.gitHead ?? '—'}${build.gitDirty && build.gitDirty.length > 0 ? ` with uncommitted changes in ${build.gitDirty.join(', ')}` : ''}.`,
    '',
    '## Keep-up',
    '',
    `pgbench TPC-B (\`${report.workload.pgbench}\`) on the source while each tool replays; medians over the runs that caught up afterwards.`,
    '',
    renderMarkdownTable(buildKeepUpTable(report)),
    '',
    '## Backlog',
    '',
    'Written on the source while the tool was stopped, then drained; the insert part and the update + delete part are ' +
      'each written and drained on their own (so the insert rate is measured alone), total = both.',
    '',
    ...report.workload.backlog.map((line) => `- ${line}`),
    '',
    renderMarkdownTable(buildBacklogTable(report)),
    '',
    '## Targets of the issue',
    '',
    renderMarkdownTable(buildTargetsTable(report)),
    '',
    LEGEND,
    '',
    '## Every run',
    '',
    renderMarkdownTable(buildRunsTable(report)),
    '',
    `Source dataset generated once, in ${report.dataset.generateSeconds.toFixed(1)} s; ` +
      `${(report.dataset.databaseBytes / 1e6).toFixed(0)} MB (pg_database_size) before round 1.`,
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
