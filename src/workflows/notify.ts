// Wires the Slack notifier for an engine run (CLI or Action): configuration from the environment object
// the entry point hands in, the message ref kept on the target, and a handle the entry point tees its
// events into, reports a failure to, and closes before exit (a no-op handle when Slack is not configured).

import { withClient } from '../adapters/postgres/client';
import { readMigration } from '../adapters/postgres/control-schema';
import { createSlackNotifier } from '../adapters/slack/notifier';
import { createSlackClient } from '../adapters/slack/web-client';
import { readNotifyConfig } from '../config/bot';
import { isMigrationError } from '../core/errors';
import type { MigrationEvent } from '../core/events';
import type { Redactor } from '../core/redact';
import { renderCleanResult, renderValidationReport } from '../core/slack-message';
import type { ValidationReport } from '../core/validation';
import type { Clock } from '../ports';
import type { CleanResult } from './clean';
import { resolveEndpoint } from './connections';
import { createTargetSlackStore } from './notify-store';

/** The handle when Slack is not configured: every call does nothing. */
export const SLACK_OFF: SlackNotifyHandle = {
  enabled: false,
  postValidation: () => undefined,
  postClean: () => undefined,
  handle: () => undefined,
  fail: () => undefined,
  close: async () => undefined,
};

/** The commands whose progress has a live message: the long-running ones of the engine. */
export const NOTIFIED_COMMANDS: ReadonlySet<string> = new Set(['copy', 'migrate', 'replay']);
/** The commands that post their result in the migration's thread (through postValidation / postClean). */
export const REPORTING_COMMANDS: ReadonlySet<string> = new Set(['validate', 'clean']);

export interface SlackNotifyHandle {
  readonly enabled: boolean;
  /** validate: the report as a table in the migration's thread (and the bot's "last validation"). */
  postValidation(report: ValidationReport): void;
  /** clean: what was removed, in the migration's thread. */
  postClean(result: CleanResult): void;
  handle(event: MigrationEvent): void;
  /** Posts the error (code, what happened, the fix) in the thread; call before close(). */
  fail(error: unknown): void;
  /** Delivers what is pending, bounded (10 s by default); never throws. */
  close(timeoutMs?: number): Promise<void>;
}

export function startSlackNotifier(input: {
  command: string;
  env: Record<string, string | undefined>;
  migrationId: string;
  /** The target connection string; the message ref is kept there. */
  target: string | undefined;
  /** --lag-target as given (a size or a duration). */
  lagTarget: string | undefined;
  redactor: Redactor;
  clock: Clock;
  log: (line: string) => void;
}): SlackNotifyHandle {
  const live = NOTIFIED_COMMANDS.has(input.command);
  if (!live && !REPORTING_COMMANDS.has(input.command)) return SLACK_OFF;
  const config = readNotifyConfig(input.env, input.lagTarget);
  if (!config) return SLACK_OFF;
  input.redactor.add(config.token);
  let target: ReturnType<typeof resolveEndpoint> | undefined;
  try {
    target = input.target ? resolveEndpoint(input.target, 'target', input.redactor) : undefined;
  } catch {
    target = undefined; // The command itself reports the bad connection string.
  }
  const notifier = createSlackNotifier({
    client: createSlackClient({ token: config.token, apiUrl: config.apiUrl, timeoutMs: 5000 }),
    channel: config.channel,
    migrationId: input.migrationId,
    store: target ? createTargetSlackStore(target, input.clock) : undefined,
    nowMs: () => input.clock.nowMs(),
    lagTarget: config.lagTarget,
    updateIntervalMs: config.updateIntervalMs,
    runUrl: config.runUrl,
    expectCopy: input.command !== 'replay',
    mode: live ? 'live' : 'report',
    redact: (text) => input.redactor.redact(text),
    log: (level, message) => input.log(`${level === 'warn' ? 'WARN: ' : ''}${message}`),
  });
  if (input.command === 'migrate' && target) {
    // A resumed migrate whose copy is done goes straight to the live replay.
    const info = target;
    void withClient(info, (c) => readMigration(c, input.migrationId))
      .then((m) => {
        if (m?.copyFinishedAt) notifier.copyAlreadyDone();
      })
      .catch(() => undefined);
  }
  const clock = input.clock;
  return {
    enabled: true,
    postValidation(report) {
      const differing = report.tables.filter((t) => !t.ok).length;
      notifier.post(
        renderValidationReport(report),
        `Validation ${report.ok ? 'passed' : 'failed'} (${report.tables.length - differing}/${report.tables.length} tables match)`,
        {
          lastValidation: {
            ok: report.ok,
            tables: report.tables.length,
            differing,
            checksum: report.checksum,
            atMs: clock.nowMs(),
          },
        },
      );
    },
    postClean(result) {
      notifier.post(renderCleanResult(input.migrationId, result), 'Cleaned');
    },
    handle: (event) => notifier.handle(event),
    fail(error) {
      notifier.fail(
        isMigrationError(error)
          ? { code: error.code, message: error.message, hint: error.hint }
          : {
              code: 'INTERNAL',
              message: error instanceof Error ? error.message : String(error),
              hint: 'A bug: please report it with the log.',
            },
      );
    },
    close: (timeoutMs) => notifier.flush(timeoutMs).catch(() => undefined),
  };
}
