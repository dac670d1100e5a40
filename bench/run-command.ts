// Runs one external command for a benchmark: wall-clock seconds, peak RSS through GNU time, output tails,
// a timeout, and a process group that an interrupt can kill as a whole.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { onInterrupt } from './interrupts.js';

export const GNU_TIME = '/usr/bin/time';

export interface CommandSpec {
  file: string;
  args: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** Wrap in GNU time to read the peak RSS (needs /usr/bin/time, Debian package `time`). */
  measureRss?: boolean;
}

export interface CommandOutcome {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  seconds: number;
  /**
   * GNU time's %M: the peak RSS of the largest single process in the tree (the command or one of the
   * children it waited for), in KiB. Not the sum over the tree. Undefined when not measured.
   */
  peakRssKiB: number | undefined;
  stdoutTail: string;
  stderrTail: string;
}

const TAIL_CHARS = 4000;

export function hasGnuTime(): boolean {
  return existsSync(GNU_TIME);
}

/** The absolute path of an executable on PATH, or undefined. */
export function findOnPath(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export function describeCommand(spec: Pick<CommandSpec, 'file' | 'args'>): string {
  return [spec.file, ...spec.args]
    .map((part) => (/^[\w@%+=:,./-]+$/.test(part) ? part : `'${part}'`))
    .join(' ');
}

export async function runCommand(spec: CommandSpec): Promise<CommandOutcome> {
  const scratch = spec.measureRss ? await mkdtemp(join(tmpdir(), 'plm-bench-time-')) : undefined;
  const rssFile = scratch ? join(scratch, 'rss') : undefined;
  const [file, args] = rssFile
    ? [GNU_TIME, ['-f', '%M', '-o', rssFile, spec.file, ...spec.args]]
    : [spec.file, [...spec.args]];
  try {
    const started = performance.now();
    const outcome = await new Promise<Omit<CommandOutcome, 'seconds' | 'peakRssKiB'>>((resolve, reject) => {
      // Own process group: GNU time ignores SIGINT and does not forward signals, so an interrupt or a
      // timeout kills the whole group (time, the tool and the workers it forked) by group id.
      const child = spawn(file, args, {
        cwd: spec.cwd,
        env: spec.env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      let stdoutTail = '';
      let stderrTail = '';
      let timedOut = false;
      child.stdout.on('data', (chunk: Buffer) => {
        stdoutTail = (stdoutTail + chunk.toString()).slice(-TAIL_CHARS);
      });
      child.stderr.on('data', (chunk: Buffer) => {
        stderrTail = (stderrTail + chunk.toString()).slice(-TAIL_CHARS);
      });
      const killGroup = (signal: NodeJS.Signals) => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(-child.pid, signal);
        } catch {
          // The group is already gone.
        }
      };
      const unregister = onInterrupt(() => killGroup('SIGTERM'));
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup('SIGTERM');
        setTimeout(() => killGroup('SIGKILL'), 10_000).unref();
      }, spec.timeoutMs);
      child.on('error', (error) => {
        clearTimeout(timer);
        unregister();
        reject(error);
      });
      child.on('close', (exitCode, signal) => {
        clearTimeout(timer);
        unregister();
        resolve({ exitCode, signal, timedOut, stdoutTail, stderrTail });
      });
    });
    const seconds = (performance.now() - started) / 1000;
    return { ...outcome, seconds, peakRssKiB: rssFile ? await readPeakRss(rssFile) : undefined };
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

/** GNU time writes "Command exited with non-zero status N" before the format line when the tool fails. */
async function readPeakRss(rssFile: string): Promise<number | undefined> {
  const text = await readFile(rssFile, 'utf8').catch(() => '');
  const last = text.trim().split('\n').at(-1) ?? '';
  return /^\d+$/.test(last) ? Number(last) : undefined;
}

export function isSuccess(outcome: CommandOutcome): boolean {
  return outcome.exitCode === 0 && !outcome.timedOut;
}

/** One line saying how a failed command ended, then the end of its stderr (or stdout when stderr is empty). */
export function describeFailure(name: string, outcome: CommandOutcome): string {
  const how = outcome.timedOut
    ? 'timed out'
    : outcome.signal
      ? `was killed by ${outcome.signal}`
      : `exited with ${outcome.exitCode}`;
  const tail = (outcome.stderrTail.trim() || outcome.stdoutTail.trim()).split('\n').slice(-15).join('\n');
  return `${name} ${how}${tail ? `:\n${tail}` : ''}`;
}
