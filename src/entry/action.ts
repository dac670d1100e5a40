// The GitHub Action entry (dist/action.js, run by action.yml): the only Action code that reads inputs,
// env and signals. It restores the migration's state artifact, runs one engine command, writes the job
// summary and outputs, saves the state again, and at the end of a replay segment dispatches the next run.
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as core from '@actions/core';
import {
  findStateArtifact,
  type RunRef,
  restoreStateArtifact,
  type StateFile,
  saveStateArtifact,
  stateArtifactName,
  writePlanFile,
  writeStateFile,
} from '../adapters/artifacts/state-artifact';
import { createConsoleReporter } from '../adapters/console/reporter';
import { annotate, maskSecret, setOutputs, writeJobSummary } from '../adapters/github/runner-commands';
import { createWorkflowDispatch } from '../adapters/github/workflow-dispatch';
import { withClient } from '../adapters/postgres/client';
import { parseConnInfo } from '../adapters/postgres/connection';
import { CONTROL_SCHEMA, readParts } from '../adapters/postgres/control-schema';
import {
  cleanOptions,
  commonOptions,
  copyOptions,
  parseHypertableSpec,
  validateOptions,
} from '../config/options';
import { computeExitCode, ExitCode, isMigrationError, MigrationError } from '../core/errors';
import type { MigrationEvent } from '../core/events';
import { formatBytes, formatCount, formatDuration, parseByteSize } from '../core/format';
import { parseDurationMs, parseMaxLag } from '../core/lag';
import type { PreflightReport } from '../core/preflight';
import { createRedactor } from '../core/redact';
import {
  capMarkdown,
  createSummaryFacts,
  escapeMarkdownText,
  recordSummaryEvent,
  renderCopySection,
  renderCutoverSection,
  renderReplaySection,
  renderWarningsSection,
  SUMMARY_MAX_BYTES,
  type SummaryFacts,
} from '../core/summary';
import type { ValidationReport } from '../core/validation';
import { systemClock, type WorkflowContext } from '../ports';
import { type CleanResult, runClean } from '../workflows/clean';
import { type Endpoints, resolveEndpoints } from '../workflows/connections';
import { runCopy } from '../workflows/copy';
import { runCutover } from '../workflows/cutover';
import { runMigrate } from '../workflows/migrate';
import { type SlackNotifyHandle, startSlackNotifier } from '../workflows/notify';
import { runPreflight } from '../workflows/preflight';
import { renderPreflightMarkdown, renderPreflightText } from '../workflows/preflight-render';
import { type ReplayOutcome, runReplay } from '../workflows/replay';
import { runSnapshot } from '../workflows/snapshot';
import { type MigrationStatus, readStatus, renderStatusText } from '../workflows/status';
import { runValidateCommand } from '../workflows/validate-aligned';
import { renderValidationMarkdown, renderValidationText } from '../workflows/validate-render';

const COMMANDS = [
  'preflight',
  'snapshot',
  'copy',
  'migrate',
  'replay',
  'cutover',
  'validate',
  'status',
  'clean',
] as const;
type Command = (typeof COMMANDS)[number];

/** A save or restore never holds the job longer than this: the artifact is a journal, not the truth. */
const ARTIFACT_TIMEOUT_MS = 120_000;
/** While a replay runs for hours, its state is saved this often (and once when the copy is done). */
const CHECKPOINT_EVERY_MS = 60 * 60_000;

/** Every input of action.yml, read the way @actions/core reads a JavaScript action's inputs. */
function readInputs() {
  const text = (name: string) => core.getInput(name);
  const bool = (name: string) => {
    const value = core.getInput(name);
    if (value === '') return false;
    if (['true', 'True', 'TRUE'].includes(value)) return true;
    if (['false', 'False', 'FALSE'].includes(value)) return false;
    throw configError(
      `Input '${name}' must be true or false, got '${value}'.`,
      `Set ${name}: true or false.`,
    );
  };
  return {
    command: text('command'),
    source: text('source'),
    target: text('target'),
    migrationId: text('migration-id') || 'default',
    dir: text('dir'),
    schemas: text('schema')
      .split(/[,\n]/)
      .map((s) => s.trim())
      .filter(Boolean),
    tableJobs: text('table-jobs'),
    indexJobs: text('index-jobs'),
    splitTablesLargerThan: text('split-tables-larger-than'),
    skipSchema: bool('skip-schema'),
    skipRoles: bool('skip-roles'),
    hypertables: text('hypertable')
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean),
    allowTimescaledbVersionMismatch: bool('allow-timescaledb-version-mismatch'),
    partsOnly: bool('parts-only'),
    resume: bool('resume'),
    resumeRunId: text('resume-run-id'),
    segment: text('segment'),
    lagInterval: text('lag-interval'),
    maxLag: text('max-lag'),
    timeout: text('timeout'),
    fenceRoles: text('fence-roles'),
    force: bool('force'),
    checksum: bool('checksum'),
    prune: bool('prune'),
    githubToken: text('github-token'),
    // Empty: the workflow this run belongs to (GITHUB_WORKFLOW_REF names the caller's file); 'none': no dispatch.
    workflow: text('workflow') || workflowFromRef(process.env.GITHUB_WORKFLOW_REF) || 'live-migration.yml',
    ref: text('ref'),
    dispatchInputs: text('dispatch-inputs'),
    pgBindir: text('pg-bindir'),
  };
}
type Inputs = ReturnType<typeof readInputs>;

const configError = (message: string, hint: string) =>
  new MigrationError('CONFIG_INVALID_OPTION', message, hint);

/** What one command produced, for the summary and the outputs. */
interface CommandResult {
  verdict: string;
  sections: string[];
  /** A machine-readable report saved beside the Markdown one (preflight, validate). */
  json?: unknown;
  /** The report as the CLI prints it, for the job log and logs/<command>.log. */
  text?: string;
  validationOk?: boolean;
  segmentEndedAt?: string;
  /** Warnings a section shows already (the validation report's), left out of the Warnings section. */
  shownWarnings?: string[];
  exitCode: number;
}

export async function main(env: NodeJS.ProcessEnv): Promise<number> {
  const redactor = createRedactor([env.PGPASSWORD]);
  // 1. Masks first: nothing is printed before every secret we know of is registered with the runner.
  let inputs: Inputs | undefined;
  let inputError: unknown;
  try {
    inputs = readInputs();
  } catch (error) {
    inputError = error;
  }
  // Read apart from the other inputs, so that a bad input elsewhere cannot keep these from being masked.
  const [source, target, githubToken] = ['source', 'target', 'github-token'].map((name) =>
    core.getInput(name),
  );
  const passwords: (string | undefined)[] = [];
  for (const text of [source, target]) {
    if (!text) continue;
    try {
      passwords.push(parseConnInfo(text, 'source').keywords.password);
    } catch {
      // An unparsable string is reported by the command; the whole string is masked below.
    }
  }
  const tokens = [env.PGPASSWORD, env.ACTIONS_RUNTIME_TOKEN, githubToken, ...passwords];
  for (const secret of [...tokens, source, target]) maskSecret(secret);
  for (const secret of tokens) redactor.add(secret);

  const say = (line: string) => process.stdout.write(`${redactor.redact(line)}\n`);
  if (!inputs) return fail(inputError, say);
  const input: Inputs = inputs;
  const command = input.command as Command;
  if (!COMMANDS.includes(command)) {
    return fail(
      new MigrationError(
        'CONFIG_UNKNOWN_COMMAND',
        `Unknown command '${input.command}'.`,
        `Set the input command to one of: ${COMMANDS.join(', ')}.`,
      ),
      say,
    );
  }
  if (input.resumeRunId && !/^\d+$/.test(input.resumeRunId)) {
    return fail(
      configError(
        `Input resume-run-id '${input.resumeRunId}' is not a workflow run id.`,
        'Set it to the number in the run URL (…/actions/runs/<id>), or leave it empty.',
      ),
      say,
    );
  }
  const dir = resolve(input.dir || join(env.RUNNER_TEMP ?? '.', 'pg-live-migrate'));
  const runId = env.GITHUB_RUN_ID ? Number(env.GITHUB_RUN_ID) : null;
  const runAttempt = env.GITHUB_RUN_ATTEMPT ? Number(env.GITHUB_RUN_ATTEMPT) : null;
  const [owner = '', repo = ''] = (env.GITHUB_REPOSITORY ?? '').split('/');
  const artifactName = stateArtifactName(input.migrationId);
  /** Staging folders for artifacts: the job's temporary folder, which the runner empties after the job. */
  const scratch = env.RUNNER_TEMP || tmpdir();
  const artifactsOn = Boolean(env.ACTIONS_RUNTIME_TOKEN && env.ACTIONS_RESULTS_URL);

  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const reporter = createConsoleReporter({
    stream: process.stdout,
    redactor,
    nowMs: () => systemClock.nowMs(),
    logFile: join(dir, 'logs', `${command}.log`),
  });
  const warn = (message: string) => {
    reporter.line(`WARNING: ${message}`);
    annotate('warning', redactor.redact(message));
  };
  const facts = createSummaryFacts();
  let endpoints: Endpoints | undefined;

  // 2. State: the journal of earlier jobs of this run, else of the run we resume.
  const notes: string[] = [];
  let restoredFrom: StateFile | undefined;
  if (!artifactsOn) {
    notes.push('Workflow artifacts are off (no ACTIONS_RUNTIME_TOKEN): the state is not saved between jobs.');
    warn(
      'ACTIONS_RUNTIME_TOKEN / ACTIONS_RESULTS_URL are not set, so the state artifact is neither restored nor saved. Use this action through its action.yml (which exports them), not by running dist/action.js alone.',
    );
  } else {
    const resumeRun: RunRef | undefined =
      input.resumeRunId && owner && repo
        ? { runId: Number(input.resumeRunId), owner, repo, token: input.githubToken }
        : undefined;
    const restored = await restoreState(artifactName, dir, scratch, resumeRun, warn);
    restoredFrom = restored.state;
    if (restored.line) reporter.line(restored.line);
    if (restored.note) notes.push(restored.note);
  }

  // 3. Saving: a checkpoint during long commands, and once at the end, one at a time.
  const saveEnabled = artifactsOn && !input.partsOnly;
  let saving: Promise<string | undefined> = Promise.resolve(undefined);
  let lastSaveMs = systemClock.nowMs();
  const save = (why: string, status?: MigrationStatus) => {
    if (!saveEnabled) return saving;
    lastSaveMs = systemClock.nowMs();
    saving = saving.then(async () => {
      try {
        const known =
          status ?? (endpoints ? await readStatus(endpoints, input).catch(() => undefined) : undefined);
        await writeStateFile(dir, {
          migrationId: input.migrationId,
          phase: known ? (known.exists ? known.phase : 'none') : (restoredFrom?.phase ?? 'unknown'),
          ...(known?.replay?.appliedLsn ? { appliedLsn: known.replay.appliedLsn } : {}),
          targetHost: targetHostOf(input.target),
          controlSchema: CONTROL_SCHEMA,
          savedAt: new Date(systemClock.nowMs()).toISOString(),
          runId,
          runAttempt,
          command,
        });
        const target = endpoints?.target;
        const parts = target
          ? await withClient(target, (c) => readParts(c, input.migrationId)).catch(() => undefined)
          : undefined;
        if (parts?.length) await writePlanFile(dir, { migrationId: input.migrationId, parts });
        const result = await withTimeout(
          saveStateArtifact(artifactName, dir, scratch, warn),
          ARTIFACT_TIMEOUT_MS,
        );
        reporter.line(`Saved state artifact ${artifactName} (${result.files} files, ${why}).`);
        return `State saved as artifact \`${artifactName}\` (${result.files} files).`;
      } catch (error) {
        warn(
          `Could not save the state artifact ${artifactName} (${(error as Error).message}); the databases stay the truth.`,
        );
        return `State artifact \`${artifactName}\` could not be saved: the databases stay the truth.`;
      }
    });
    return saving;
  };

  // Slack (SLACK_BOT_TOKEN + SLACK_CHANNEL in the job's env): the same live message as from the CLI.
  maskSecret(env.SLACK_BOT_TOKEN);
  redactor.add(env.SLACK_BOT_TOKEN);
  const slack: SlackNotifyHandle = startSlackNotifier({
    command,
    env,
    migrationId: input.migrationId,
    target: input.target,
    lagTarget: env['INPUT_LAG-TARGET'] || undefined,
    redactor,
    clock: systemClock,
    log: (line) => reporter.line(line),
  });
  const ctx: WorkflowContext = {
    emit: (event: MigrationEvent) => {
      reporter.handle(event);
      slack.handle(event);
      const now = systemClock.nowMs();
      recordSummaryEvent(facts, event, now);
      if (event.type === 'copy:done') void save('checkpoint: copy done');
      if (event.type === 'replay:lag' && now - lastSaveMs >= CHECKPOINT_EVERY_MS) void save('checkpoint');
    },
    clock: systemClock,
    redactor,
    env,
    stopSignal: controller.signal,
  };

  // 4. The command.
  let result: CommandResult | undefined;
  let failure: unknown;
  let status: MigrationStatus | undefined;
  let finalSaveDone = false;
  try {
    endpoints = resolveEndpoints({ source: input.source, target: input.target }, redactor);
    result = await runCommand(command, input, { ctx, endpoints, dir, facts, env });
  } catch (error) {
    failure = error;
    slack.fail(error);
  }
  try {
    if (endpoints) status = await readStatus(endpoints, input).catch(() => undefined);
    const exitCode = failure === undefined ? (result?.exitCode ?? ExitCode.ok) : computeExitCode(failure);
    const validationOk =
      result?.validationOk ??
      (isMigrationError(failure) && failure.code === 'VALIDATION_MISMATCH' ? false : undefined);

    // 5. Summary and report, saved with the state.
    const heading = `## pg-live-migrate \`${command}\`: migration \`${input.migrationId}\``;
    const verdict = failure === undefined ? (result?.verdict ?? '') : failureVerdict(command, failure);
    if (result?.text) reporter.line(result.text.trimEnd());
    if (failure === undefined && result) reporter.line(result.verdict.replace(/`/g, ''));
    const sections = [
      ...(result?.sections ?? []),
      ...(failure !== undefined && command !== 'preflight' ? sectionsFromFacts(command, facts) : []),
      renderWarningsSection(facts, result?.shownWarnings),
    ].filter(Boolean);
    const body = [
      heading,
      '',
      verdict,
      '',
      ...notes.map((n) => `> ${escapeMarkdownText(n)}`),
      notes.length ? '' : undefined,
    ]
      .filter((line) => line !== undefined)
      .join('\n');
    const markdown = capMarkdown(
      redactor.redact(`${body}\n${sections.join('\n')}`),
      SUMMARY_MAX_BYTES - 2000,
    );
    const reportPath = join(dir, 'reports', `${command}.md`);
    try {
      mkdirSync(join(dir, 'reports'), { recursive: true });
      writeFileSync(reportPath, markdown);
      if (result?.json !== undefined)
        writeFileSync(
          join(dir, 'reports', `${command}.json`),
          redactor.redact(JSON.stringify(result.json, null, 2)),
        );
    } catch (error) {
      warn(`Could not write the report ${reportPath}: ${(error as Error).message}`);
    }

    // The error goes into the log before the log is saved.
    if (failure !== undefined) reportError(failure, reporter.line, redactor.redact);

    // 6. State, then the next segment (which must find this run's state).
    const saved = await save('end of step', status);
    finalSaveDone = true;
    let dispatched = false;
    let dispatchLine: string | undefined;
    let finalExit = exitCode;
    if (result?.segmentEndedAt !== undefined && input.workflow === 'none') {
      dispatchLine = `⏸️ Segment ended at \`${result.segmentEndedAt}\`; no next run was dispatched (workflow: none). Resume with resume_run_id ${runId ?? ''}.`;
    } else if (result?.segmentEndedAt !== undefined) {
      const next = await dispatchNextSegment(
        { ...input, ref: input.ref || (env.GITHUB_REF_NAME ?? '') },
        { owner, repo, runId },
      ).catch((error: Error) => error);
      if (next instanceof Error) {
        const error = new MigrationError(
          'ACTION_DISPATCH_FAILED',
          `The replay segment ended at ${result.segmentEndedAt}, but the next run of ${input.workflow} could not be dispatched: ${next.message}`,
          `Run ${input.workflow} by hand with resume_run_id=${runId ?? '<this run id>'} soon: until a replay runs, the source keeps its WAL for the slot.`,
        );
        dispatchLine = `❌ ${escapeMarkdownText(redactor.redact(error.message))}<br>${escapeMarkdownText(error.hint)}`;
        reportError(error, reporter.line, redactor.redact);
        finalExit = computeExitCode(error);
      } else {
        dispatched = true;
        dispatchLine = `⏭️ Dispatched the next run of \`${escapeMarkdownText(input.workflow)}\` on \`${escapeMarkdownText(next.ref)}\` with resume_run_id ${runId ?? ''}: it continues from the position recorded on the target.`;
        reporter.line(
          `Dispatched the next run of ${input.workflow} (ref ${next.ref}, resume_run_id ${runId}).`,
        );
      }
    }
    const footer = [dispatchLine, saved]
      .filter(Boolean)
      .map((l) => `\n${l}\n`)
      .join('');
    await writeJobSummary(capMarkdown(markdown + redactor.redact(footer))).catch((error: Error) =>
      warn(`Could not write the job summary: ${error.message}`),
    );
    const lagBytes = facts.lastLag?.lagBytes ?? status?.lagBytes;
    const outputs: Record<string, string> = {
      phase: status ? (status.exists ? status.phase : 'none') : '',
      'lag-bytes': lagBytes === null || lagBytes === undefined ? '' : String(lagBytes),
      'validation-ok': validationOk === undefined ? '' : String(validationOk),
      'report-path': reportPath,
      'segment-ended': String(result?.segmentEndedAt !== undefined),
      'next-run-dispatched': String(dispatched),
    };
    setOutputs(Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, redactor.redact(v)])));
    return finalExit;
  } finally {
    // Whatever failed above, the state is saved once more (the summary may be lost, the journal is not).
    if (!finalSaveDone) await save('end of step', status);
    await saving.catch(() => undefined);
    await slack.close().catch(() => undefined);
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

interface RunDeps {
  ctx: WorkflowContext;
  endpoints: Endpoints;
  dir: string;
  facts: SummaryFacts;
  env: NodeJS.ProcessEnv;
}

async function runCommand(command: Command, inputs: Inputs, deps: RunDeps): Promise<CommandResult> {
  const { ctx, endpoints, facts } = deps;
  const resume = inputs.resume || inputs.resumeRunId !== '';
  const common = commonOptions.parse({
    source: inputs.source || undefined,
    target: inputs.target || undefined,
    migrationId: inputs.migrationId,
    dir: deps.dir,
    json: false,
    pgBindir: inputs.pgBindir || undefined,
    schemas: inputs.schemas.length ? inputs.schemas : null,
  });
  const cpus = availableParallelism();
  const copy = () => {
    const splitBytes =
      inputs.splitTablesLargerThan === '' ? 1024 ** 3 : parseByteSize(inputs.splitTablesLargerThan);
    if (splitBytes === undefined) {
      throw configError(
        `Input split-tables-larger-than '${inputs.splitTablesLargerThan}' is not a size.`,
        'Set it to e.g. 1GB, 500MB or 0 (never split).',
      );
    }
    return copyOptions.parse({
      ...common,
      tableJobs: parseCount(inputs.tableJobs, 'table-jobs', cpus),
      indexJobs: parseCount(inputs.indexJobs, 'index-jobs', cpus),
      splitTablesLargerThan: splitBytes,
      skipSchema: inputs.skipSchema,
      skipRoles: inputs.skipRoles,
      noOwner: false,
      resume,
      partsOnly: inputs.partsOnly,
      hypertables: inputs.hypertables.map(parseHypertableSpec),
    });
  };
  const ok = (verdict: string, sections: string[], extra: Partial<CommandResult> = {}): CommandResult => ({
    verdict,
    sections,
    exitCode: ExitCode.ok,
    ...extra,
  });

  switch (command) {
    case 'preflight': {
      const report: PreflightReport = await runPreflight(ctx, endpoints, {
        ...common,
        skipSchema: inputs.skipSchema,
        skipRoles: inputs.skipRoles,
        allowTimescaledbVersionMismatch: inputs.allowTimescaledbVersionMismatch,
      });
      return {
        verdict: report.ok
          ? `✅ Preflight passed (${report.counts.warning} warnings).`
          : `❌ Preflight failed: ${report.counts.error} errors to fix (each with its fix below).`,
        sections: [renderPreflightMarkdown(report)],
        json: report,
        text: renderPreflightText(report),
        exitCode: report.ok ? ExitCode.ok : ExitCode.preflight,
      };
    }
    case 'snapshot': {
      const snapshot = await runSnapshot(ctx, endpoints, { ...common, hold: false });
      if (snapshot.released === 'connection-lost') {
        throw new MigrationError(
          'SNAPSHOT_EXPIRED',
          'The connection holding the snapshot was lost before the copy finished.',
          'Check the source server and network; the copy then resumes from a fresh snapshot (copy with resume: true).',
        );
      }
      return ok(
        `✅ Snapshot \`${snapshot.snapshotName}\` at \`${snapshot.consistentLsn}\` held until the copy finished.`,
        [],
      );
    }
    case 'copy': {
      const options = copy();
      const r = await runCopy(ctx, endpoints, options);
      return ok(
        options.partsOnly
          ? `✅ Helped the copy: ${formatCount(r.partsCopied)} parts, ${formatCount(r.rows)} rows, ${formatBytes(r.bytes)} in ${formatDuration(r.seconds * 1000)}.`
          : `✅ Copy finished: ${formatCount(r.tables)} tables, ${formatCount(r.rows)} rows, ${formatBytes(r.bytes)} in ${formatDuration(r.seconds * 1000)}.`,
        [renderCopySection(facts)],
      );
    }
    case 'migrate':
    case 'replay': {
      const lagIntervalMs = parseDuration(inputs.lagInterval, 'lag-interval', 10_000);
      const segmentMs = parseDuration(inputs.segment, 'segment', 20 * 3600_000);
      const outcome: ReplayOutcome =
        command === 'migrate'
          ? await runMigrate(ctx, endpoints, { ...copy(), lagIntervalMs, segmentMs })
          : await runReplay(ctx, endpoints, {
              migrationId: common.migrationId,
              mode: 'apply',
              lagIntervalMs,
              segmentMs,
            });
      const sections = sectionsFromFacts(command, facts);
      if (outcome.kind === 'cutover-done' && outcome.endLsn === 'already done') {
        return ok('✅ The migration had already completed its cutover: nothing to replay.', sections, {
          validationOk: true,
        });
      }
      if (outcome.kind === 'cutover-done') {
        return ok(
          `✅ Migration completed: cutover at \`${outcome.endLsn}\`; source and target match.`,
          sections,
          {
            validationOk: true,
          },
        );
      }
      if (outcome.kind === 'segment-ended') {
        return ok(
          `⏸️ Replay segment ended after ${formatDuration(segmentMs)} at \`${outcome.appliedLsn}\`, everything received committed on the target; the next run resumes from there.`,
          sections,
          { segmentEndedAt: outcome.appliedLsn },
        );
      }
      return {
        verdict:
          '⏹️ Replay stopped (the job was cancelled); run it again with resume: true to continue from the position recorded on the target.',
        sections,
        exitCode: ExitCode.runtime,
      };
    }
    case 'cutover': {
      const maxLagText = inputs.maxLag || '500KB';
      const maxLag = parseMaxLag(maxLagText);
      if (!maxLag)
        throw configError(
          `Input max-lag '${maxLagText}' is neither a size nor a duration.`,
          'Set it to e.g. 500KB, 16MB, 5s or 2min.',
        );
      const fenceRoles = inputs.fenceRoles
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean);
      const r = await runCutover(ctx, endpoints, {
        migrationId: common.migrationId,
        maxLag,
        timeoutMs: parseDuration(inputs.timeout, 'timeout', 10 * 60_000),
        fenceRoles,
        force: inputs.force,
        checksum: inputs.checksum,
      });
      const section = [
        '### Cutover',
        '',
        '| | |',
        '| --- | --- |',
        `| end position | \`${r.endLsn || '(already done)'}\` |`,
        `| drain, sequences, triggers, views and validation | ${r.seconds.toFixed(1)} s |`,
        `| fenced roles | ${fenceRoles.length ? fenceRoles.map((f) => `\`${escapeMarkdownText(f)}\``).join(', ') : 'none'} |`,
        `| validation | ${inputs.checksum ? 'row counts and checksums' : 'row counts'}: ✅ match |`,
        '',
        'The step timings are in the summary of the job that runs the replay.',
        '',
      ].join('\n');
      return ok(
        r.endLsn
          ? `✅ Cutover completed in ${formatDuration(r.seconds * 1000)} at \`${r.endLsn}\`: point the application at the target.`
          : '✅ The migration had already completed its cutover.',
        [section, renderCutoverSection(facts)],
        { validationOk: true },
      );
    }
    case 'validate': {
      const options = validateOptions.parse({
        ...common,
        checksum: inputs.checksum,
        markdown: undefined,
        buckets: 16,
      });
      const report: ValidationReport = await runValidateCommand(ctx, endpoints, options);
      const differing = report.tables.filter((t) => !t.ok).length;
      return {
        verdict: report.ok
          ? `✅ Validation passed: ${report.tables.length} tables match.`
          : `❌ Validation failed: ${differing} of ${report.tables.length} tables differ.`,
        sections: [renderValidationMarkdown(report, { maxBytes: SUMMARY_MAX_BYTES - 50_000 })],
        json: report,
        text: renderValidationText(report),
        shownWarnings: report.warnings.map((w) => w.trim()),
        validationOk: report.ok,
        exitCode: report.ok ? ExitCode.ok : ExitCode.validation,
      };
    }
    case 'status': {
      const s = await readStatus(endpoints, common);
      return ok(
        s.exists
          ? `ℹ️ Migration \`${s.migrationId}\` is in phase **${s.phase}**${s.lagBytes !== null ? ` with a replay lag of ${formatBytes(s.lagBytes)}` : ''}.`
          : `ℹ️ The target records nothing for migration \`${s.migrationId}\` yet.`,
        [renderStatusMarkdown(s)],
        { text: renderStatusText(s) },
      );
    }
    case 'clean': {
      const r: CleanResult = await runClean(
        ctx,
        endpoints,
        cleanOptions.parse({ ...common, prune: inputs.prune }),
      );
      const lines = [
        '### Clean',
        '',
        `- replication slot: ${r.slotDropped ? 'dropped' : 'none left'}`,
        `- publications dropped: ${r.publicationsDropped.length ? r.publicationsDropped.map((p) => `\`${p}\``).join(', ') : 'none'}`,
        `- target state: ${formatCount(r.targetRowsDeleted)} rows deleted${r.targetSchemaDropped ? `, schema \`${CONTROL_SCHEMA}\` dropped` : ''}`,
        `- work folder: ${inputs.prune ? `${r.pruned.length} entries pruned (logs kept)` : 'kept'}`,
        '',
      ];
      return ok('🧹 Cleaned: the source and target hold nothing of this migration any more.', [
        lines.join('\n'),
      ]);
    }
  }
}

function sectionsFromFacts(command: Command, facts: SummaryFacts): string[] {
  const out: string[] = [];
  if (command === 'copy' || command === 'migrate') out.push(renderCopySection(facts));
  out.push(renderReplaySection(facts), renderCutoverSection(facts));
  if (facts.validation) out.push(renderValidationMarkdown(facts.validation, { maxBytes: 200_000 }));
  return out.filter(Boolean);
}

function renderStatusMarkdown(s: MigrationStatus): string {
  if (!s.exists) return '';
  const r = s.replay;
  const rows: [string, string][] = [
    ['phase', `${s.phase}${s.copyFinished ? ' (copy finished)' : ''}`],
    ['tables', `${formatCount(s.tables.done)} of ${formatCount(s.tables.total)}`],
    ['parts', `${formatCount(s.parts.done)} of ${formatCount(s.parts.total)}`],
    ['copied', `${formatCount(s.rowsCopied)} rows, ${formatBytes(s.bytesCopied)}`],
    [
      'slot',
      s.slot.exists === null
        ? 'unknown (source unreachable)'
        : s.slot.exists
          ? `\`${s.slot.name}\`, ${s.slot.active ? 'active' : 'inactive'}, retains ${formatBytes(s.slot.retainedBytes ?? 0)}`
          : 'none',
    ],
  ];
  if (r) {
    rows.push(
      [
        'replay',
        `${r.alive ? 'running' : 'not running'}; applied \`${r.appliedLsn}\`, source \`${r.sourceLsn ?? '-'}\``,
      ],
      [
        'lag',
        s.lagBytes === null
          ? 'not measured yet'
          : `${formatBytes(s.lagBytes)} / ${(s.lagSeconds ?? 0).toFixed(1)} s`,
      ],
      [
        'rates',
        `source WAL ${formatBytes(r.sourceWalRate ?? 0)}/s, replay ${formatBytes(r.replayRate ?? 0)}/s, ETA ${r.etaSeconds === null ? 'not catching up' : formatDuration(r.etaSeconds * 1000)}`,
      ],
    );
  }
  if (s.error) rows.push(['last error', `\`${s.error.code}\`: ${escapeMarkdownText(s.error.message)}`]);
  return ['### Status', '', '| | |', '| --- | --- |', ...rows.map(([k, v]) => `| ${k} | ${v} |`), ''].join(
    '\n',
  );
}

function failureVerdict(command: Command, error: unknown): string {
  if (isMigrationError(error)) {
    return `❌ \`${command}\` failed with \`${error.code}\`: ${escapeMarkdownText(error.message)}<br>**What to do:** ${escapeMarkdownText(error.hint)}`;
  }
  return `❌ \`${command}\` failed with an internal error (a bug: please report it with the log): ${escapeMarkdownText(String((error as Error)?.message ?? error))}`;
}

function reportError(error: unknown, line: (text: string) => void, redact: (text: string) => string): void {
  const text = isMigrationError(error)
    ? `error ${error.code}: ${error.message}\n  hint: ${error.hint}`
    : `error INTERNAL: ${(error as Error)?.stack ?? String(error)}`;
  line(text);
  core.setFailed(
    redact(isMigrationError(error) ? `${error.code}: ${error.message} (${error.hint})` : String(error)),
  );
}

function fail(error: unknown, say: (line: string) => void): number {
  reportError(error, say, (t) => t);
  return computeExitCode(error);
}

/**
 * Brings back the state artifact: this run's own (an earlier job or attempt), else the one of the run we
 * resume. Any failure is a warning: the databases are the truth.
 */
async function restoreState(
  name: string,
  dir: string,
  scratch: string,
  resumeRun: RunRef | undefined,
  warn: (message: string) => void,
): Promise<{ state?: StateFile; line?: string; note?: string }> {
  try {
    const restored = await withTimeout(
      (async () => {
        const own = await findStateArtifact(name);
        if (own) return { from: 'this run', ...(await restoreStateArtifact(own, dir, scratch)) };
        if (!resumeRun) return undefined;
        const earlier = await findStateArtifact(name, resumeRun);
        if (!earlier) return { from: `run ${resumeRun.runId}` };
        return {
          from: `run ${resumeRun.runId}`,
          ...(await restoreStateArtifact(earlier, dir, scratch, resumeRun)),
        };
      })(),
      ARTIFACT_TIMEOUT_MS,
    );
    if (!restored) return {};
    if (!('files' in restored)) {
      warn(`${restored.from} has no artifact ${name}; going on from what the databases record.`);
      return { note: `No state artifact in ${restored.from}: resumed from what the databases record.` };
    }
    const what = restored.state
      ? `phase ${restored.state.phase}${restored.state.appliedLsn ? `, applied ${restored.state.appliedLsn}` : ''}, saved ${restored.state.savedAt}`
      : (restored.problem ?? 'no state file');
    if (restored.problem)
      warn(`The restored state artifact is incomplete (${restored.problem}); the databases stay the truth.`);
    return {
      ...(restored.state ? { state: restored.state } : {}),
      // Logged only now: a restored logs/<command>.log is continued, not shadowed by a new one.
      line: `Restored state artifact ${name} from ${restored.from} (${restored.files} files; ${what}).`,
      note: `State restored from ${restored.from} (${what}); the databases stay the truth.`,
    };
  } catch (error) {
    warn(
      `Could not restore the state artifact ${name} (${(error as Error).message}); going on from what the databases record.`,
    );
    return resumeRun ? { note: 'No state artifact restored: resumed from what the databases record.' } : {};
  }
}

async function dispatchNextSegment(
  inputs: Inputs,
  run: { owner: string; repo: string; runId: number | null },
): Promise<{ ref: string }> {
  if (!run.owner || !run.repo || run.runId === null)
    throw new Error('GITHUB_REPOSITORY or GITHUB_RUN_ID is not set');
  if (!inputs.ref) throw new Error('the input ref is empty');
  let extra: Record<string, unknown> = {};
  if (inputs.dispatchInputs.trim()) {
    try {
      extra = JSON.parse(inputs.dispatchInputs) as Record<string, unknown>;
    } catch {
      throw new Error(`the input dispatch-inputs is not a JSON object`);
    }
  }
  const dispatchInputs: Record<string, string> = {};
  for (const [key, value] of Object.entries(extra ?? {})) {
    if (value !== null && value !== undefined)
      dispatchInputs[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  dispatchInputs.resume_run_id = String(run.runId);
  await createWorkflowDispatch({
    token: inputs.githubToken,
    owner: run.owner,
    repo: run.repo,
    workflow: inputs.workflow,
    ref: inputs.ref,
    inputs: dispatchInputs,
  });
  return { ref: inputs.ref };
}

/** host:port/dbname of a connection string, for state.json: never the user or the password. */
function targetHostOf(text: string): string {
  try {
    const k = parseConnInfo(text, 'target').keywords;
    return `${k.host ?? k.hostaddr ?? 'localhost'}:${k.port ?? '5432'}/${k.dbname ?? ''}`;
  } catch {
    return 'unknown';
  }
}

function parseCount(value: string, name: string, fallback: number): number {
  if (value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw configError(
      `Input ${name} must be a whole number ≥ 1, got '${value}'.`,
      `Set ${name}: 4, for example.`,
    );
  return n;
}

function parseDuration(value: string, name: string, fallbackMs: number): number {
  if (value === '') return fallbackMs;
  const ms = parseDurationMs(value);
  if (ms === undefined || ms <= 0)
    throw configError(`Input ${name} '${value}' is not a duration.`, `Set ${name} to e.g. 10s, 2min or 20h.`);
  return ms;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up after ${formatDuration(ms)}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

main(process.env).then(
  (code) => {
    process.exitCode = code;
    // An artifact call that timed out may keep a socket open: the exit code is final once main returns.
    setTimeout(() => process.exit(code), 3000).unref();
  },
  (error) => {
    process.stdout.write(`error INTERNAL: ${String(error)}\n`);
    process.exitCode = ExitCode.internal;
  },
);

/** "owner/repo/.github/workflows/live.yml@refs/heads/main" → "live.yml". */
function workflowFromRef(ref: string | undefined): string | undefined {
  const match = /\/\.github\/workflows\/([^@/]+)@/.exec(ref ?? '');
  return match?.[1];
}
