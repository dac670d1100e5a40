// The Slack bot's command handling: `/migrate status|cutover|validate|clean` and the Approve / Reject /
// Clean buttons, over the Slack and GitHub ports and the target's control schema. Cutover approval is
// four-eyes (an allowed approver who is not the requester, decided once on the target); with GitHub
// configured the approved cutover goes through the run (protection rule, else a dispatch), without it the
// request is written to the target directly. Every decision and its outcome is written to the thread.
import { randomUUID } from 'node:crypto';
import { parseCallbackRunId } from '../adapters/github-app/runs';
import { type ConnInfo, parseConnInfo } from '../adapters/postgres/connection';
import type { BotConfig } from '../config/bot';
import { isMigrationError, MigrationError } from '../core/errors';
import type { MigrationEvent } from '../core/events';
import { formatBytes, formatDuration } from '../core/format';
import { CAUGHT_UP_BYTES } from '../core/lag';
import type { Redactor } from '../core/redact';
import {
  buildButtonValue,
  decideApproval,
  isApprover,
  parseButtonValue,
  parseMigrateCommand,
  REFUSAL_TEXT,
} from '../core/slack-command';
import {
  ActionId,
  escapeSlack,
  formatClock,
  type ReadinessFacts,
  renderApprovalRequest,
  renderAudit,
  renderCleanConfirm,
  renderCleanResult,
  renderProgressMessage,
  renderStatus,
  renderUsage,
  renderValidationReport,
  type StatusFacts,
  slackMention,
} from '../core/slack-message';
import type {
  ApprovalRecord,
  BotHandlers,
  ButtonInput,
  GitHubRuns,
  MessageRef,
  MigrationNotes,
  Reply,
  SlackChat,
  SlackMessage,
} from '../core/slack-ports';
import { createProgress } from '../core/slack-progress';
import type { Clock, WorkflowContext } from '../ports';
import { runClean } from './clean';
import { resolveEndpoint } from './connections';
import { runCutover } from './cutover';
import { createTargetSlackStore } from './notify-store';
import { type MigrationStatus, readStatus } from './status';
import { runValidateCommand } from './validate-aligned';

export interface BotDeps {
  config: BotConfig;
  chat: SlackChat;
  github: GitHubRuns | undefined;
  clock: Clock;
  redactor: Redactor;
  /** Environment for child tools (workflows take it from their context). */
  env: NodeJS.ProcessEnv;
  stopSignal: AbortSignal;
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
}

/** A confirmation waiting for its Clean button; in memory (after a restart, ask again). */
interface PendingClean {
  userId: string;
  migrationId: string;
  prune: boolean;
  atMs: number;
}
const CLEAN_CONFIRM_MS = 10 * 60_000;

/**
 * Without a source connection, status still reads the target; the source part then shows as unreachable
 * (this socket folder does not exist, so the connection fails at once).
 */
const NO_SOURCE: ConnInfo = parseConnInfo(
  'host=/nonexistent/pg-live-migrate-bot-has-no-source dbname=none connect_timeout=1',
  'source',
);

export function createBotHandlers(deps: BotDeps): BotHandlers {
  const { config, clock, redactor } = deps;
  const chat = redactingChat(deps.chat, (t) => redactor.redact(t));
  const pendingCleans = new Map<string, PendingClean>();
  const consumed = new Set<string>();

  const connections = (migrationId: string) => {
    const c = config.migrations[migrationId] ?? config.fallback;
    if (!c)
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        `The bot has no connection for migration '${migrationId}'.`,
        `Add it to PG_LIVE_MIGRATE_MIGRATIONS, or set TARGET (and SOURCE) for every migration id.`,
      );
    return {
      target: resolveEndpoint(c.target, 'target', redactor),
      source: c.source ? resolveEndpoint(c.source, 'source', redactor) : undefined,
    };
  };
  const storeFor = (target: ConnInfo) => createTargetSlackStore(target, clock);
  const ctx = (): WorkflowContext => ({
    emit: (event: MigrationEvent) => {
      if (event.type === 'log') deps.log(event.level, redactor.redact(event.message));
    },
    clock,
    redactor,
    env: deps.env,
    stopSignal: deps.stopSignal,
  });
  const errorText = (error: unknown) =>
    isMigrationError(error)
      ? `*${error.code}*: ${escapeSlack(error.message)}\n*Fix:* ${escapeSlack(error.hint)}`
      : escapeSlack(error instanceof Error ? error.message : String(error));

  /** The migration's thread: its live message, posted here when no run has posted one yet. */
  const ensureThread = async (
    migrationId: string,
    target: ConnInfo,
    channelHint: string,
  ): Promise<MessageRef> => {
    const store = storeFor(target);
    const stored = await store.get(migrationId);
    if (stored) return { channel: stored.channel, ts: stored.ts };
    const posted = await chat.post({
      channel: config.channel ?? channelHint,
      ...renderProgressMessage(createProgress(migrationId, null, clock.nowMs())),
    });
    return store.put(migrationId, posted);
  };
  const audit = async (thread: MessageRef, text: string) => {
    await chat.post({ channel: thread.channel, threadTs: thread.ts, ...renderAudit(text, clock.nowMs()) });
  };
  const readFacts = async (migrationId: string, e: ReturnType<typeof connections>) => {
    const status = await readStatus({ source: e.source ?? NO_SOURCE, target: e.target }, { migrationId });
    const notes = await storeFor(e.target)
      .get(migrationId)
      .then((s) => s?.notes)
      .catch(() => undefined);
    const runUrl = notes?.runUrl ?? (await deps.github?.latestRunUrl().catch(() => undefined)) ?? null;
    return { status, notes, facts: toFacts(status, notes, runUrl) };
  };
  const githubFailed = (error: Error) => {
    deps.log('warn', `GitHub: ${error.message}`);
    return undefined;
  };
  const groupMembers = async () =>
    config.approverGroup
      ? await chat.groupMembers(config.approverGroup).catch((error: Error) => {
          deps.log('warn', `Slack: could not list the approver group: ${error.message}`);
          return [] as string[];
        })
      : [];

  const status = async (migrationId: string, reply: Reply) => {
    const e = connections(migrationId);
    const { status: s, notes, facts } = await readFacts(migrationId, e);
    await reply.ephemeral(renderStatus(toStatusFacts(s, notes, facts)));
  };

  const requestCutover = async (
    migrationId: string,
    checksum: boolean,
    userId: string,
    channelId: string,
    reply: Reply,
  ) => {
    const e = connections(migrationId);
    const { status: s, facts } = await readFacts(migrationId, e);
    if (!s.exists)
      return reply.ephemeral(
        renderUsage(`Migration '${migrationId}' has nothing recorded on the target: no cutover to approve.`),
      );
    if (s.phase === 'done')
      return reply.ephemeral(renderUsage(`Migration '${migrationId}' has already completed its cutover.`));
    const thread = await ensureThread(migrationId, e.target, channelId);
    const key = randomUUID().slice(0, 12);
    const draft: ApprovalRecord = {
      migrationId,
      key,
      ref: thread,
      requestedBy: userId,
      requestedAtMs: clock.nowMs(),
      checksum,
      decision: null,
    };
    const value = buildButtonValue({ migrationId, key });
    // Posted without buttons first: they appear once the request is recorded, so no click can come
    // before the record it decides.
    const ref = await chat.post({
      channel: thread.channel,
      threadTs: thread.ts,
      broadcast: true,
      ...renderApprovalRequest(draft, facts, value, { buttons: false }),
    });
    await storeFor(e.target).create({ ...draft, ref });
    await chat.update(ref, renderApprovalRequest({ ...draft, ref }, facts, value));
    await reply.ephemeral({
      text: 'Approval request posted in the migration thread; another approver decides.',
    });
    if (deps.github) {
      const gate = await deps.github.findWaitingGate(migrationId).catch(githubFailed);
      if (gate)
        await deps.github
          .reviewGate(gate, null, `Cutover approval requested in Slack by ${userId}; ${lagComment(facts)}.`)
          .catch((error: Error) => deps.log('warn', `GitHub status report: ${error.message}`));
    }
  };

  const decide = async (input: ButtonInput, reply: Reply) => {
    const v = parseButtonValue(input.value);
    if (!v) return;
    const e = connections(v.migrationId);
    const store = storeFor(e.target);
    const record = await store.read(v.migrationId, v.key);
    if (!record)
      return reply.ephemeral({ text: 'This approval request is not known on the target (cleaned?).' });
    const verdict = input.actionId === ActionId.approve ? 'approved' : 'rejected';
    const outcome = decideApproval(
      record,
      { userId: input.userId, verdict, nowMs: clock.nowMs() },
      { users: config.approvers, groupMembers: await groupMembers() },
    );
    const thread = await store.get(v.migrationId).catch(() => undefined);
    const threadRef: MessageRef = thread ? { channel: thread.channel, ts: thread.ts } : record.ref;
    if (outcome.kind === 'already-decided') return; // A double click, or a second approver too late: nothing.
    if (outcome.kind === 'refused') {
      await audit(
        threadRef,
        `:no_entry_sign: ${slackMention(input.userId)} tried to ${verdict === 'approved' ? 'approve' : 'reject'} the cutover: refused, ${REFUSAL_TEXT[outcome.reason]}.`,
      );
      return reply.ephemeral({ text: `Refused: ${REFUSAL_TEXT[outcome.reason]}.` });
    }
    const decision = outcome.record.decision;
    if (!decision || !(await store.decide(v.migrationId, v.key, decision))) return;
    const { facts } = await readFacts(v.migrationId, e).catch(() => ({ facts: undefined }));
    await chat
      .update(record.ref, renderApprovalRequest(outcome.record, facts ?? EMPTY_FACTS, ''))
      .catch((error: Error) =>
        deps.log('warn', `Slack: could not update the approval message: ${error.message}`),
      );
    await audit(
      threadRef,
      `${verdict === 'approved' ? ':white_check_mark: Cutover *approved*' : ':no_entry: Cutover *rejected*'} by ${slackMention(input.userId)} at ${formatClock(decision.atMs)} (requested by ${slackMention(record.requestedBy)} ${formatDuration(decision.atMs - record.requestedAtMs)} earlier)${facts ? `; ${lagComment(facts)}` : ''}.`,
    );
    if (verdict === 'rejected') {
      const gate = await deps.github?.findWaitingGate(v.migrationId).catch(githubFailed);
      if (gate && deps.github) {
        await deps.github
          .reviewGate(gate, 'rejected', `Rejected in Slack by ${input.userId}.`)
          .then(() =>
            audit(threadRef, `Rejected the waiting cutover job of <${gate.runUrl}|run ${gate.runId}>.`),
          )
          .catch((error: Error) =>
            audit(threadRef, `:x: GitHub refused the rejection: ${escapeSlack(error.message)}`),
          );
      }
      return;
    }
    await executeCutover(outcome.record, e, threadRef, input.userId, facts);
  };

  const executeCutover = async (
    record: ApprovalRecord,
    e: ReturnType<typeof connections>,
    thread: MessageRef,
    approver: string,
    facts: ReadinessFacts | undefined,
  ) => {
    const id = record.migrationId;
    if (deps.github) {
      const github = deps.github;
      try {
        const gate = await github.findWaitingGate(id);
        if (gate) {
          await github.reviewGate(
            gate,
            'approved',
            `Approved in Slack by ${approver} (requested by ${record.requestedBy})${facts ? `; ${lagComment(facts)}` : ''}.`,
          );
          await audit(
            thread,
            `:arrow_forward: Approved the waiting cutover job of <${gate.runUrl}|run ${gate.runId}> (environment ${escapeSlack(gate.environment)}); the run drains and finishes.`,
          );
        } else {
          await github.dispatch({ command: 'cutover', migration_id: id, checksum: String(record.checksum) });
          await audit(
            thread,
            `:arrow_forward: No cutover job was waiting: dispatched the workflow with \`command: cutover\`; the run drains and finishes.`,
          );
        }
      } catch (error) {
        await audit(thread, `:x: GitHub refused the cutover: ${errorText(error)}`);
      }
      return;
    }
    await audit(
      thread,
      ':arrow_forward: Writing the cutover request on the target; the replay drains to the end position.',
    );
    try {
      // runCutover reads and writes the target only.
      const result = await runCutover(
        ctx(),
        { source: e.source ?? NO_SOURCE, target: e.target },
        {
          migrationId: id,
          maxLag: config.cutover.maxLag,
          timeoutMs: config.cutover.timeoutMs,
          fenceRoles: config.cutover.fenceRoles,
          force: false,
          checksum: record.checksum,
        },
      );
      await audit(
        thread,
        `:checkered_flag: The cutover request completed: end position ${escapeSlack(result.endLsn)}, ${formatDuration(result.seconds * 1000)}.`,
      );
    } catch (error) {
      await audit(thread, `:x: The cutover did not complete: ${errorText(error)}`);
    }
  };

  const validate = async (
    migrationId: string,
    checksum: boolean,
    userId: string,
    channelId: string,
    reply: Reply,
  ) => {
    const e = connections(migrationId);
    const thread = await ensureThread(migrationId, e.target, channelId);
    if (deps.github) {
      await deps.github.dispatch({
        command: 'validate',
        migration_id: migrationId,
        checksum: String(checksum),
      });
      await audit(
        thread,
        `:mag: ${slackMention(userId)} asked for a validation${checksum ? ' with checksums' : ''}: dispatched the workflow with \`command: validate\`; its run posts the table here.`,
      );
      return reply.ephemeral({
        text: 'Validation dispatched; the table will be posted in the migration thread.',
      });
    }
    if (!e.source)
      throw new MigrationError(
        'CONFIG_MISSING_SOURCE',
        'The bot has no source connection, so it cannot validate.',
        'Set SOURCE (or the source in PG_LIVE_MIGRATE_MIGRATIONS), or configure GitHub so the bot dispatches the validation.',
      );
    await audit(
      thread,
      `:mag: ${slackMention(userId)} started a validation${checksum ? ' with checksums' : ''}.`,
    );
    await reply.ephemeral({ text: 'Validating; the table will be posted in the migration thread.' });
    try {
      const report = await runValidateCommand(
        ctx(),
        { source: e.source, target: e.target },
        {
          migrationId,
          source: undefined,
          target: undefined,
          dir: '',
          json: false,
          pgBindir: undefined,
          schemas: null,
          checksum,
          markdown: undefined,
          buckets: 16,
          repair: false,
        },
      );
      await chat.post({ channel: thread.channel, threadTs: thread.ts, ...renderValidationReport(report) });
      const differing = report.tables.filter((t) => !t.ok).length;
      await storeFor(e.target)
        .patchNotes(migrationId, {
          lastValidation: {
            ok: report.ok,
            tables: report.tables.length,
            differing,
            checksum,
            atMs: clock.nowMs(),
          },
          milestone: `Validation ${report.ok ? 'passed' : 'failed'} (${report.tables.length - differing}/${report.tables.length} tables match)`,
        })
        .catch(() => undefined);
    } catch (error) {
      await audit(thread, `:x: Validation did not complete: ${errorText(error)}`);
    }
  };

  const askClean = async (
    migrationId: string,
    prune: boolean,
    userId: string,
    channelId: string,
    reply: Reply,
  ) => {
    connections(migrationId);
    if (!isApprover(userId, { users: config.approvers, groupMembers: await groupMembers() }))
      return reply.ephemeral({
        text: `Refused: clean is for approvers (${REFUSAL_TEXT['not-an-approver']}).`,
      });
    const key = randomUUID().slice(0, 12);
    pendingCleans.set(key, { userId, migrationId, prune, atMs: clock.nowMs() });
    void channelId;
    await reply.ephemeral(
      renderCleanConfirm(migrationId, prune, buildButtonValue({ migrationId, key, prune })),
    );
  };

  const confirmClean = async (input: ButtonInput, reply: Reply) => {
    const v = parseButtonValue(input.value);
    if (!v || consumed.has(v.key)) return; // A double click does nothing.
    const pending = pendingCleans.get(v.key);
    if (!pending || pending.userId !== input.userId || clock.nowMs() - pending.atMs > CLEAN_CONFIRM_MS)
      return reply.ephemeral({
        text: 'This confirmation has expired; run /migrate clean again.',
        replaceOriginal: true,
      });
    pendingCleans.delete(v.key);
    consumed.add(v.key);
    await reply.ephemeral({ text: `Cleaning \`${pending.migrationId}\` …`, replaceOriginal: true });
    const e = connections(pending.migrationId);
    // Read the thread before clean removes its record.
    const stored = await storeFor(e.target)
      .get(pending.migrationId)
      .catch(() => undefined);
    const thread: MessageRef = stored
      ? { channel: stored.channel, ts: stored.ts }
      : { channel: input.channelId, ts: '' };
    const say = (text: string) =>
      thread.ts
        ? audit(thread, text)
        : chat.post({ channel: thread.channel, ...renderAudit(text, clock.nowMs()) }).then(() => undefined);
    await say(
      `:broom: ${slackMention(input.userId)} confirmed \`clean${pending.prune ? ' --prune' : ''}\` of \`${pending.migrationId}\`.`,
    );
    if (deps.github) {
      try {
        await deps.github.dispatch({
          command: 'clean',
          migration_id: pending.migrationId,
          prune: String(pending.prune),
        });
        await say(
          ':arrow_forward: Dispatched the workflow with `command: clean`; its run removes the slot, publications and state.',
        );
      } catch (error) {
        await say(`:x: GitHub refused the dispatch: ${errorText(error)}`);
      }
      return;
    }
    if (!e.source)
      return say(
        ':x: The bot has no source connection (SOURCE), so it cannot drop the slot; nothing was cleaned.',
      );
    try {
      const result = await runClean(
        ctx(),
        { source: e.source, target: e.target },
        {
          migrationId: pending.migrationId,
          source: undefined,
          target: undefined,
          dir: config.dir ?? '.',
          json: false,
          pgBindir: undefined,
          schemas: null,
          prune: pending.prune && config.dir !== undefined,
        },
      );
      const text = renderCleanResult(pending.migrationId, result).blocks?.[0];
      await say(text?.type === 'section' ? (text.text?.text ?? '') : 'Cleaned.');
    } catch (error) {
      await say(`:x: Clean did not complete: ${errorText(error)}`);
    }
  };

  return {
    async onCommand(input, rawReply) {
      const reply = redactingReply(rawReply, (t) => redactor.redact(t));
      const command = parseMigrateCommand(input.text, config.defaultMigrationId);
      try {
        switch (command.kind) {
          case 'usage':
            return await reply.ephemeral(renderUsage(command.problem ?? undefined));
          case 'status':
            return await status(command.migrationId, reply);
          case 'cutover':
            return await requestCutover(
              command.migrationId,
              command.checksum,
              input.userId,
              input.channelId,
              reply,
            );
          case 'validate':
            return await validate(
              command.migrationId,
              command.checksum,
              input.userId,
              input.channelId,
              reply,
            );
          case 'clean':
            return await askClean(command.migrationId, command.prune, input.userId, input.channelId, reply);
        }
      } catch (error) {
        await reply.ephemeral({
          text: redactor.redact(
            `Error: ${isMigrationError(error) ? `${error.code}: ${error.message} (${error.hint})` : String(error)}`,
          ),
        });
      }
    },
    async onButton(input, rawReply) {
      const reply = redactingReply(rawReply, (t) => redactor.redact(t));
      try {
        if (input.actionId === ActionId.approve || input.actionId === ActionId.reject)
          return await decide(input, reply);
        if (input.actionId === ActionId.clean) return await confirmClean(input, reply);
      } catch (error) {
        deps.log('error', redactor.redact(`button ${input.actionId}: ${String(error)}`));
        await reply.ephemeral({
          text: redactor.redact(
            `Error: ${isMigrationError(error) ? `${error.code}: ${error.message}` : String(error)}`,
          ),
        });
      }
    },
    async onGitHubEvent(event, payload) {
      const p = payload as { action?: string; environment?: string; deployment_callback_url?: string };
      if (event !== 'deployment_protection_rule' || p.action !== 'requested' || !deps.github) return;
      const runId = parseCallbackRunId(p.deployment_callback_url);
      const environment = p.environment;
      if (runId === undefined || !environment || environment !== config.github?.environment) return;
      const id = config.defaultMigrationId;
      const e = connections(id);
      const { facts } = await readFacts(id, e);
      await deps.github.reviewGate(
        { runId, environment },
        null,
        `Waiting for an approval in Slack (/migrate cutover ${id}); ${lagComment(facts)}.`,
      );
      const stored = await storeFor(e.target).get(id);
      if (stored)
        await audit(
          stored,
          `:double_vertical_bar: A cutover job waits for its approval (run ${runId}, environment ${escapeSlack(environment)}): \`/migrate cutover ${id}\` asks for it here.`,
        );
    },
  };
}

const EMPTY_FACTS: ReadinessFacts = {
  phase: 'unknown',
  replayRunning: false,
  lagBytes: null,
  lagSeconds: null,
  caughtUp: false,
  lastValidation: null,
  runUrl: null,
};

function toFacts(
  s: MigrationStatus,
  notes: MigrationNotes | undefined,
  runUrl: string | null,
): ReadinessFacts {
  return {
    phase: s.phase,
    replayRunning: s.replay?.alive ?? false,
    lagBytes: s.lagBytes,
    lagSeconds: s.lagSeconds,
    caughtUp: s.lagBytes !== null && s.lagBytes <= CAUGHT_UP_BYTES,
    lastValidation: notes?.lastValidation ?? null,
    runUrl,
  };
}

function toStatusFacts(
  s: MigrationStatus,
  notes: MigrationNotes | undefined,
  facts: ReadinessFacts,
): StatusFacts {
  return {
    ...facts,
    migrationId: s.migrationId,
    exists: s.exists,
    tables: s.tables,
    rowsCopied: s.rowsCopied,
    etaSeconds: s.replay?.etaSeconds ?? null,
    sourceWalRate: s.replay?.sourceWalRate ?? null,
    replayRate: s.replay?.replayRate ?? null,
    slot: `${s.slot.name}${s.slot.exists === null ? ' (source not reachable from the bot)' : s.slot.exists ? '' : ' (missing)'}`,
    error: s.error,
    milestones: notes?.milestones ?? [],
  };
}

function lagComment(f: ReadinessFacts): string {
  return f.lagBytes === null
    ? 'lag unknown'
    : `lag ${formatBytes(f.lagBytes)} (${(f.lagSeconds ?? 0).toFixed(1)} s)${f.caughtUp ? ', caught up' : ''}`;
}

/** A deep copy with every string passed through the redactor. */
function cleanStrings<T>(value: T, redact: (text: string) => string): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => cleanStrings(v, redact)) as T;
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cleanStrings(v, redact)])) as T;
  return value;
}

function redactingReply(reply: Reply, redact: (text: string) => string): Reply {
  return { ephemeral: (message) => reply.ephemeral(cleanStrings(message, redact)) };
}

/** Every text the bot sends passes the redactor (passwords, tokens, connection strings). */
function redactingChat(chat: SlackChat, redact: (text: string) => string): SlackChat {
  const clean = <T extends SlackMessage>(m: T): T => cleanStrings(m, redact);
  return {
    post: (input) => chat.post(clean(input)),
    update: (ref, message) => chat.update(ref, clean(message)),
    groupMembers: (group) => chat.groupMembers(group),
  };
}
