// A long-running tool process for the benchmarks (a replay that runs until told to stop): its own process
// group, its whole output in a log file plus an in-memory tail, a signal to stop it, and its memory and CPU
// time read from /proc while it runs.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { onInterrupt } from './interrupts.js';

export interface BackgroundSpec {
  file: string;
  args: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Everything the process prints (stdout and stderr) is appended here. */
  logFile: string;
}

export interface ProcessUsage {
  /** VmHWM of the process itself: its peak resident set since it started, KiB. */
  peakRssKiB: number | undefined;
  /** The sum of VmRSS over every process of its group right now, KiB. */
  groupRssKiB: number;
  /** User + system CPU seconds used so far by the processes of its group that are still running. */
  groupCpuSeconds: number;
}

export interface BackgroundProcess {
  readonly pid: number;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
  /** The last few thousand characters of its output. */
  tail(): string;
  /** Sends a signal to the process alone, or to its whole group (the workers it forked too). */
  signal(signal: NodeJS.Signals, target: 'process' | 'group'): void;
  /** Sends the signal, waits up to timeoutMs for the exit, then kills the group; returns how it ended. */
  stop(
    signal: NodeJS.Signals,
    target: 'process' | 'group',
    timeoutMs: number,
  ): Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; killed: boolean }>;
  readUsage(): Promise<ProcessUsage>;
}

const TAIL_CHARS = 6000;

export function startBackgroundProcess(spec: BackgroundSpec): BackgroundProcess {
  const log = createWriteStream(spec.logFile, { flags: 'a' });
  // Own process group: a stop or an interrupt reaches every worker a tool forked (pgcopydb forks several).
  const child: ChildProcess = spawn(spec.file, [...spec.args], {
    cwd: spec.cwd,
    env: spec.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let tail = '';
  const onData = (chunk: Buffer) => {
    log.write(chunk);
    tail = (tail + chunk.toString()).slice(-TAIL_CHARS);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let running = true;
  const exited = new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (error) => {
      running = false;
      tail += `\n${error.message}`;
      resolve({ exitCode: null, signal: null });
    });
    child.on('close', (exitCode, signal) => {
      running = false;
      resolve({ exitCode, signal });
    });
  }).finally(() => {
    log.end();
    unregister();
  });
  const pid = child.pid ?? -1;
  const signalTo = (signal: NodeJS.Signals, target: 'process' | 'group') => {
    if (!running || pid < 0) return;
    try {
      process.kill(target === 'group' ? -pid : pid, signal);
    } catch {
      // Already gone.
    }
  };
  const unregister = onInterrupt(async () => {
    signalTo('SIGTERM', 'group');
    const timer = setTimeout(() => signalTo('SIGKILL', 'group'), 5_000);
    await exited;
    clearTimeout(timer);
  });
  return {
    pid,
    exited,
    isRunning: () => running,
    tail: () => tail,
    signal: signalTo,
    async stop(signal, target, timeoutMs) {
      if (!running) return { ...(await exited), killed: false };
      signalTo(signal, target);
      let killed = false;
      const timer = setTimeout(() => {
        killed = true;
        signalTo('SIGKILL', 'group');
      }, timeoutMs);
      const outcome = await exited;
      clearTimeout(timer);
      return { ...outcome, killed };
    },
    readUsage: () => readProcessUsage(pid),
  };
}

/** /proc/<pid>/stat counts CPU time in clock ticks of USER_HZ, which Linux fixes at 100 for user space. */
const TICKS_PER_SECOND = 100;

/** Reads VmHWM of the process and sums VmRSS and CPU time over its process group, from /proc (Linux only). */
export async function readProcessUsage(pid: number): Promise<ProcessUsage> {
  const own = await readStatusFields(pid);
  let groupRssKiB = 0;
  let ticks = 0;
  const entries = await readdir('/proc').catch(() => [] as string[]);
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) !== pid) continue;
    ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    groupRssKiB += (await readStatusFields(Number(entry))).rssKiB ?? 0;
  }
  return { peakRssKiB: own.hwmKiB, groupRssKiB, groupCpuSeconds: ticks / TICKS_PER_SECOND };
}

async function readStatusFields(pid: number): Promise<{ hwmKiB?: number; rssKiB?: number }> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) : undefined;
  };
  return { hwmKiB: field('VmHWM'), rssKiB: field('VmRSS') };
}
