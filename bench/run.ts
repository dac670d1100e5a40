// Entry point of the benchmarks (`npm run bench -- <benchmark> [options]`): the only bench code that reads
// argv, handles signals and sets the exit code. 0 every run ok, 1 a run or the harness failed, 2 usage, 130 interrupted.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runCopyBenchmark } from './copy.js';
import { COPY_TOOLS, type CopyTool, renderCopyTable } from './copy-report.js';
import { runInterruptCleanups } from './interrupts.js';
import { runReplayBenchmark } from './replay.js';
import { REPLAY_TOOLS, type ReplayTool } from './replay-peers.js';
import { renderReplayTable } from './replay-report.js';
import { runTimescaleBenchmark, TIMESCALE_TOOLS, type TimescaleTool } from './timescale.js';

const USAGE = `usage: npm run bench -- copy [--scale 100] [--jobs 2] [--repeat 3] [--only ours,pgdump,native,pgcopydb] [--tmp-dir DIR]
       npm run bench -- replay [--jobs 2] [--repeat 2] [--seconds 60] [--scale 10] [--backlog 1000000] [--only ours,native,pgcopydb] [--tmp-dir DIR]
       npm run bench -- timescale [--rows 4000000] [--jobs 2] [--repeat 2] [--only ours,pgdump] [--tmp-dir DIR]

benchmarks:
  copy    copy one generated dataset (~20 MB per scale unit) with each tool and compare wall-clock time
  replay  replay a pgbench TPC-B load (lag p50/p99/max) and drain a backlog (rows/s) with each tool
  timescale  copy a TimescaleDB hypertable (half its chunks compressed, a continuous aggregate) with ours and
          with pg_dump/pg_restore around timescaledb_pre_restore()/post_restore() (needs TimescaleDB installed)

options:
  --scale N     copy: dataset size: pgbench -s N, plus a TOASTed table and a table without a primary key (default 100)
                replay: pgbench -s N of the source (default 10)
  --jobs N      table and index jobs for every tool (default 2); replay: for the initial copy
  --repeat N    rounds: every tool runs once per round, the order rotated each round; the report gives
                medians and per-round peer/ours ratios (default: copy 3, replay 2)
  --seconds N   replay: length of the keep-up pgbench run (default 60)
  --rows N      timescale: rows of the hypertable (default 4000000)
  --backlog N   replay: rows inserted by the backlog, a multiple of 100000; half as many are then updated and
                as many deleted (default 1000000)
  --only LIST   comma-separated subset of: copy ${COPY_TOOLS.join(', ')}; replay ${REPLAY_TOOLS.join(', ')}
                (default: all, in that order)
  --tmp-dir DIR parent folder for clusters and dumps (default: <os tmp>/plm-bench)

exit codes: 0 every run of every tool ok, 1 a run or the harness failed, 2 usage error, 130 interrupted`;

class UsageError extends Error {}

interface CopyArguments {
  benchmark: 'copy';
  scale: number;
  jobs: number;
  repeat: number;
  tools: CopyTool[];
  tmpDir?: string;
}

interface TimescaleArguments {
  benchmark: 'timescale';
  rows: number;
  jobs: number;
  repeat: number;
  tools: TimescaleTool[];
  tmpDir?: string;
}

interface ReplayArguments {
  benchmark: 'replay';
  scale: number;
  jobs: number;
  repeat: number;
  keepUpSeconds: number;
  backlogInserts: number;
  tools: ReplayTool[];
  tmpDir?: string;
}

function parseBenchArguments(argv: string[]): CopyArguments | ReplayArguments | TimescaleArguments | 'help' {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  const [benchmark, ...extra] = positionals;
  if (benchmark === undefined) throw new UsageError('name a benchmark: copy, replay or timescale');
  if (benchmark !== 'copy' && benchmark !== 'replay' && benchmark !== 'timescale')
    throw new UsageError(`unknown benchmark '${benchmark}'; the benchmarks are copy, replay and timescale`);
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`);
  const known: readonly string[] =
    benchmark === 'copy' ? COPY_TOOLS : benchmark === 'replay' ? REPLAY_TOOLS : TIMESCALE_TOOLS;
  const tools = (values.only ?? known.join(','))
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  const unknown = tools.filter((name) => !known.includes(name));
  if (unknown.length > 0 || tools.length === 0) {
    throw new UsageError(`--only takes a list of ${known.join(', ')}; got '${values.only}'`);
  }
  if (benchmark === 'timescale') {
    return {
      benchmark,
      rows: parsePositiveInteger('--rows', values.rows ?? '4000000'),
      jobs: parsePositiveInteger('--jobs', values.jobs ?? '2'),
      repeat: parsePositiveInteger('--repeat', values.repeat ?? '2'),
      tools: [...new Set(tools)] as TimescaleTool[],
      tmpDir: values['tmp-dir'],
    };
  }
  if (benchmark === 'replay') {
    const backlogInserts = parsePositiveInteger('--backlog', values.backlog ?? '1000000');
    if (backlogInserts % 100_000 !== 0)
      throw new UsageError(`--backlog takes a multiple of 100000; got '${values.backlog}'`);
    return {
      benchmark,
      scale: parsePositiveInteger('--scale', values.scale ?? '10'),
      jobs: parsePositiveInteger('--jobs', values.jobs ?? '2'),
      repeat: parsePositiveInteger('--repeat', values.repeat ?? '2'),
      keepUpSeconds: parsePositiveInteger('--seconds', values.seconds ?? '60'),
      backlogInserts,
      tools: [...new Set(tools)] as ReplayTool[],
      tmpDir: values['tmp-dir'],
    };
  }
  for (const flag of ['seconds', 'backlog'] as const) {
    if (values[flag] !== undefined)
      throw new UsageError(`--${flag} is an option of the replay benchmark only`);
  }
  return {
    benchmark,
    scale: parsePositiveInteger('--scale', values.scale ?? '100'),
    jobs: parsePositiveInteger('--jobs', values.jobs ?? '2'),
    repeat: parsePositiveInteger('--repeat', values.repeat ?? '3'),
    tools: [...new Set(tools)] as CopyTool[],
    tmpDir: values['tmp-dir'],
  };
}

function parseOptions(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      scale: { type: 'string' },
      jobs: { type: 'string' },
      repeat: { type: 'string' },
      seconds: { type: 'string' },
      backlog: { type: 'string' },
      rows: { type: 'string' },
      only: { type: 'string' },
      'tmp-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

function parsePositiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new UsageError(`${flag} takes a whole number >= 1; got '${text}'`);
  return value;
}

/** The folder holding this project's package.json, found from this file (bench/run.ts or bench/.build/run.mjs). */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).name === 'pg-live-migrate')
      return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the pg-live-migrate package.json above bench/');
    dir = parent;
  }
}

async function main(): Promise<number> {
  let args: CopyArguments | ReplayArguments | TimescaleArguments | 'help';
  try {
    args = parseBenchArguments(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench: ${error.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const started = Date.now();
  const log = (line: string) => {
    const elapsed = Math.round((Date.now() - started) / 1000);
    process.stderr.write(`[bench ${String(elapsed).padStart(4)}s] ${line}\n`);
  };
  const repoRoot = findRepoRoot();
  const resultsDir = join(repoRoot, 'bench', 'results');
  if (args.benchmark === 'timescale') {
    const outcome = await runTimescaleBenchmark({ ...args, repoRoot, resultsDir, log });
    process.stdout.write(`\n${outcome.text}\n\nwrote ${outcome.jsonPath}\nwrote ${outcome.markdownPath}\n`);
    return outcome.report.runs.some((run) => run.status === 'failed') ? 1 : 0;
  }
  if (args.benchmark === 'replay') {
    const outcome = await runReplayBenchmark({ ...args, repoRoot, resultsDir, log });
    process.stdout.write(`\n${renderReplayTable(outcome.report)}\n\n`);
    process.stdout.write(`wrote ${outcome.jsonPath}\nwrote ${outcome.markdownPath}\n`);
    return outcome.report.runs.some((run) => run.status === 'failed') ? 1 : 0;
  }
  const outcome = await runCopyBenchmark({
    scale: args.scale,
    jobs: args.jobs,
    repeat: args.repeat,
    tools: args.tools,
    tmpDir: args.tmpDir,
    repoRoot,
    resultsDir,
    log,
  });
  process.stdout.write(`\n${renderCopyTable(outcome.report)}\n\n`);
  process.stdout.write(`wrote ${outcome.jsonPath}\nwrote ${outcome.markdownPath}\n`);
  return outcome.report.runs.some((run) => run.status === 'failed') ? 1 : 0;
}

const run = main();

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // Repeated signals (a terminal sends one to every process, scripts/bench.mjs forwards one) are ignored
    // while the first one stops the child processes and the clusters.
    process.stderr.write(`\n[bench] ${signal}: stopping child processes and clusters\n`);
    void runInterruptCleanups(signal).then(async () => {
      // Give the benchmark's own finally blocks a moment to finish, but never hang on them.
      await Promise.race([run.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 30_000))]);
      process.exit(130);
    });
  });
}

run.then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
