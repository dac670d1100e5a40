// Renders migration events on stderr: progress bars on a TTY (cli-progress), otherwise a log line
// every few seconds. Everything printed goes through the redactor.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import cliProgress from 'cli-progress';
import type { MigrationEvent } from '../../core/events';
import { formatBytes, formatCount, formatDuration } from '../../core/format';
import type { Redactor } from '../../core/redact';

export interface Reporter {
  handle(event: MigrationEvent): void;
  line(text: string): void;
  stop(): void;
}

export function createConsoleReporter(options: {
  stream: NodeJS.WriteStream;
  redactor: Redactor;
  nowMs: () => number;
  intervalMs?: number;
  quiet?: boolean;
  /** Every line is also appended here (the --dir/logs journal); failures to write it are ignored. */
  logFile?: string;
}): Reporter {
  const { stream, redactor } = options;
  const tty = stream.isTTY === true && !options.quiet;
  let logOk = options.logFile !== undefined;
  const journal = (text: string) => {
    if (!logOk || !options.logFile) return;
    try {
      mkdirSync(dirname(options.logFile), { recursive: true });
      appendFileSync(options.logFile, `${new Date(options.nowMs()).toISOString()} ${text}\n`);
    } catch {
      logOk = false;
    }
  };
  const write = (text: string) => {
    const safe = redactor.redact(text);
    journal(safe);
    stream.write(`${safe}\n`);
  };
  const stamp = () => new Date(options.nowMs()).toISOString().slice(11, 19);

  // Copy progress state shared by both renderings.
  let plan: Extract<MigrationEvent, { type: 'copy:plan' }> | undefined;
  let bytesDone = 0;
  let rowsDone = 0;
  let partsDone = 0;
  const inFlight = new Map<
    number,
    { table: string; bytes: number; estBytes: number; bar?: cliProgress.SingleBar }
  >();
  let copyStarted = 0;
  let lastLine = 0;
  const interval = options.intervalMs ?? 5000;

  const multibar = tty
    ? new cliProgress.MultiBar(
        {
          stream,
          clearOnComplete: true,
          hideCursor: true,
          format: ' {name} |{bar}| {percentage}% {done} {rate} ETA {eta_formatted}',
          formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? formatBytes(v) : String(v)),
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let total: cliProgress.SingleBar | undefined;
  let stopped = false;

  const rate = () => {
    const seconds = Math.max((options.nowMs() - copyStarted) / 1000, 0.001);
    return `${formatBytes((bytesDone + inFlightBytes()) / seconds)}/s`;
  };
  const inFlightBytes = () => [...inFlight.values()].reduce((s, p) => s + p.bytes, 0);

  const progressLine = () => {
    if (!plan) return;
    const est = Math.max(plan.estBytes, 1);
    const current = bytesDone + inFlightBytes();
    const seconds = (options.nowMs() - copyStarted) / 1000;
    const eta = current > 0 ? ((est - current) / (current / Math.max(seconds, 0.001))) * 1000 : Number.NaN;
    write(
      `${stamp()} copy: ${partsDone}/${plan.parts} parts, ${formatCount(rowsDone)} rows, ${formatBytes(current)} of ~${formatBytes(est)} (${rate()}), ETA ${formatDuration(Math.max(eta, 0))}; in progress: ${[...inFlight.values()].map((p) => p.table).join(', ') || 'none'}`,
    );
  };

  return {
    line: (text) => {
      if (multibar && !stopped) {
        journal(redactor.redact(text));
        multibar.log(`${redactor.redact(text)}\n`);
      } else write(text);
    },
    handle(event) {
      const say = (text: string) => {
        if (!multibar || stopped) return write(text);
        journal(redactor.redact(text));
        multibar.log(`${redactor.redact(text)}\n`);
      };
      switch (event.type) {
        case 'log':
          say(`${stamp()} ${event.level === 'info' ? '' : `${event.level.toUpperCase()}: `}${event.message}`);
          break;
        case 'step':
          if (event.status !== 'start' || !tty)
            say(`${stamp()} ${event.step}: ${event.status}${event.detail ? ` (${event.detail})` : ''}`);
          break;
        case 'copy:plan':
          plan = event;
          bytesDone = event.bytesDone;
          rowsDone = event.rowsDone;
          partsDone = event.partsDone;
          copyStarted = options.nowMs();
          lastLine = copyStarted;
          say(
            `${stamp()} copy: ${event.tables} tables in ${event.parts} parts, ~${formatBytes(event.estBytes)}`,
          );
          total = multibar?.create(Math.max(event.estBytes, 1), event.bytesDone, {
            name: 'total'.padEnd(24),
            done: '',
            rate: '',
          });
          break;
        case 'copy:part:start': {
          const suffix = event.partCount > 1 ? ` [${event.partIndex + 1}/${event.partCount}]` : '';
          const name = `${event.table}${suffix}`;
          // Keep the part number visible when the name is cut to the bar's width.
          const short = name.length <= 24 ? name : `${event.table.slice(0, 23 - suffix.length)}…${suffix}`;
          const bar = multibar?.create(Math.max(event.estBytes, 1), 0, {
            name: short.padEnd(24),
            done: '',
            rate: '',
          });
          inFlight.set(event.partId, {
            table: name,
            bytes: 0,
            estBytes: event.estBytes,
            ...(bar ? { bar } : {}),
          });
          break;
        }
        case 'copy:part:progress': {
          const part = inFlight.get(event.partId);
          if (part) {
            part.bytes = event.bytes;
            part.bar?.update(Math.min(event.bytes, part.bar.getTotal()), {});
          }
          total?.update(Math.min(bytesDone + inFlightBytes(), total.getTotal()), {
            done: `${formatCount(rowsDone)} rows`,
            rate: rate(),
          });
          if (!tty && options.nowMs() - lastLine >= interval) {
            lastLine = options.nowMs();
            progressLine();
          }
          break;
        }
        case 'copy:part:done': {
          const part = inFlight.get(event.partId);
          if (part?.bar) multibar?.remove(part.bar);
          inFlight.delete(event.partId);
          bytesDone += event.bytes;
          rowsDone += event.rows;
          partsDone += 1;
          if (plan && partsDone >= plan.parts && multibar && !stopped) {
            // Bars are done; later lines (post-data, summary) go straight to the stream.
            total?.update(total.getTotal(), {});
            stopped = true;
            multibar.stop();
          }
          total?.update(Math.min(bytesDone, total.getTotal()), {
            done: `${formatCount(rowsDone)} rows`,
            rate: rate(),
          });
          if (!tty && options.nowMs() - lastLine >= interval) {
            lastLine = options.nowMs();
            progressLine();
          }
          break;
        }
        case 'cutover:step':
          say(
            `${stamp()} cutover: ${event.step}${event.detail ? ` (${event.detail})` : ''}${event.seconds !== undefined ? ` +${event.seconds.toFixed(1)}s` : ''}`,
          );
          break;
        case 'copy:done':
          if (!stopped) {
            stopped = true;
            multibar?.stop();
          }
          write(
            `${stamp()} copy done: ${formatCount(event.rows)} rows, ${formatBytes(event.bytes)} in ${formatDuration(event.seconds * 1000)}`,
          );
          break;
      }
    },
    stop() {
      stopped = true;
      multibar?.stop();
    },
  };
}
