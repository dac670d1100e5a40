// The Slack notifier: subscribes to migration events, keeps one message per migration up to date
// (chat.update, coalesced to one edit per interval) and posts milestones in its thread. Best-effort by
// construction: handle() only updates memory; one background pump talks to Slack with bounded retries,
// and whatever cannot be delivered is dropped with a log line. Slack never slows the migration.
import type { WebClient } from '@slack/web-api';
import type { MigrationEvent } from '../../core/events';
import type { LagTarget } from '../../core/slack-lag-alert';
import { renderMilestone, renderProgressMessage } from '../../core/slack-message';
import { computeRetry, computeUpdateDelay, type UpdatePacing } from '../../core/slack-pacing';
import type { MessageRef, MessageRefStore, MigrationNotes, SlackMessage } from '../../core/slack-ports';
import {
  createProgress,
  type Milestone,
  type ProgressState,
  reduceFailure,
  reduceProgress,
} from '../../core/slack-progress';
import { classifySlackError } from './web-client';

/** Milestones waiting for Slack beyond this are dropped, oldest first. */
const MAX_QUEUED = 50;
/** Slack errors that mean the stored message is gone: post a new one. */
const MESSAGE_GONE = new Set([
  'message_not_found',
  'cant_update_message',
  'channel_not_found',
  'is_archived',
]);

export interface SlackNotifierOptions {
  client: WebClient;
  channel: string;
  migrationId: string;
  /** Where the message ref is kept (the target); without it, a new run posts a new message. */
  store: MessageRefStore | undefined;
  nowMs: () => number;
  lagTarget: LagTarget | null;
  updateIntervalMs: number;
  runUrl: string | null;
  /** This run copies before it replays (see ProgressState.expectCopy). */
  expectCopy: boolean;
  /**
   * 'live' keeps the migration's message up to date from the events; 'report' (validate, clean) only posts
   * what it is given in the thread of the recorded message, read at once (clean removes the record), and
   * never records one (it would recreate the state clean dropped).
   */
  mode?: 'live' | 'report';
  /** Applied to every text sent to Slack (passwords, tokens, connection strings). */
  redact: (text: string) => string;
  log: (level: 'info' | 'warn', message: string) => void;
}

export interface SlackNotifier {
  handle(event: MigrationEvent): void;
  /** The run failed: the message shows it and the thread gets the code, what happened and the fix. */
  fail(error: { code: string; message: string; hint: string }): void;
  /** Sends what is pending (the final state first), waiting at most timeoutMs; then stops. */
  flush(timeoutMs?: number): Promise<void>;
  /** Posts a message in the migration's thread (with `note` kept as a milestone for /migrate status). */
  post(message: SlackMessage, note: string, notes?: Partial<MigrationNotes>): void;
  /** The copy turned out to be finished already (a resumed migrate): lag is the live replay's. */
  copyAlreadyDone(): void;
  /** For tests and status: the state the message shows. */
  state(): ProgressState;
}

interface Queued {
  message: SlackMessage;
  note: string;
  notes?: Partial<MigrationNotes>;
  attempts: number;
}

export function createSlackNotifier(o: SlackNotifierOptions): SlackNotifier {
  let state = createProgress(o.migrationId, o.lagTarget, o.nowMs(), o.expectCopy);
  let ref: MessageRef | undefined;
  let storeChecked = false;
  let replaceRef = false;
  const queue: Queued[] = [];
  const pacing: UpdatePacing = { lastSentMs: null, dirty: false, final: false };
  let updateAttempts = 0;
  let postAttempts = 0;
  let blockedUntilMs = 0;
  let pumping = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let slackDown = false;
  let storeWarned = false;

  const redactMessage = (m: SlackMessage): SlackMessage => mapStrings(m, o.redact);
  const storeFailed = (error: unknown) => {
    if (storeWarned) return;
    storeWarned = true;
    o.log('warn', `Slack: could not use the message record on the target: ${o.redact(String(error))}`);
  };

  const schedule = (ms: number) => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(kick, ms);
    timer.unref();
  };
  const kick = () => {
    if (!pumping && !closed) void pump();
  };

  /** One Slack call with the bookkeeping of failures: true when it went through. */
  const attempt = async (what: 'post' | 'update' | 'reply', call: () => Promise<void>, attempts: number) => {
    try {
      await call();
      if (slackDown) o.log('info', 'Slack: answering again; notifications resume.');
      slackDown = false;
      return { ok: true as const };
    } catch (error) {
      const failure = classifySlackError(error);
      if (what === 'update' && MESSAGE_GONE.has(failure.code)) {
        o.log('warn', `Slack: the migration's message is gone (${failure.code}); posting a new one.`);
        ref = undefined;
        replaceRef = true;
        pacing.dirty = true;
        return { ok: false as const, drop: false };
      }
      const retry = computeRetry(attempts, failure);
      if (!slackDown) {
        slackDown = true;
        o.log('warn', `Slack: ${what} failed (${o.redact(failure.code)}); retrying in the background.`);
      }
      if (retry === 'drop') return { ok: false as const, drop: true, code: failure.code };
      blockedUntilMs = o.nowMs() + retry.waitMs;
      return { ok: false as const, drop: false };
    }
  };

  const reportOnly = o.mode === 'report';
  const storedAtStart = reportOnly
    ? o.store?.get(o.migrationId).catch((error) => storeFailed(error))
    : undefined;

  const ensureRef = async () => {
    if (reportOnly) {
      const stored = await storedAtStart;
      // No message recorded: post at the top of the channel (ts '' = no thread).
      ref = stored ? { channel: stored.channel, ts: stored.ts } : { channel: o.channel, ts: '' };
      return;
    }
    if (!storeChecked && o.store) {
      storeChecked = true;
      const stored = await o.store.get(o.migrationId).catch((error) => storeFailed(error));
      if (stored) {
        ref = { channel: stored.channel, ts: stored.ts };
        pacing.dirty = true;
        return;
      }
    }
    const message = redactMessage(renderProgressMessage(state, { runUrl: o.runUrl }));
    const sentAt = o.nowMs();
    // Changes made while the post is on its way set dirty again (handle/fail run meanwhile).
    pacing.dirty = false;
    const posted = await o.client.chat.postMessage({
      channel: o.channel,
      text: message.text,
      blocks: message.blocks as never,
      unfurl_links: false,
    });
    let mine: MessageRef = { channel: String(posted.channel), ts: String(posted.ts) };
    pacing.lastSentMs = sentAt;
    if (o.store) {
      const recorded = await o.store.put(o.migrationId, mine, { replace: replaceRef }).catch((error) => {
        storeFailed(error);
        return mine;
      });
      if (recorded.ts !== mine.ts || recorded.channel !== mine.channel) {
        // Another process posted first: edit that one (ours stays as a stray first draft).
        mine = recorded;
        pacing.dirty = true;
      }
      if (o.runUrl) await o.store.patchNotes(o.migrationId, { runUrl: o.runUrl }).catch(storeFailed);
    }
    replaceRef = false;
    ref = mine;
  };

  const pump = async () => {
    pumping = true;
    try {
      while (!closed) {
        const now = o.nowMs();
        if (now < blockedUntilMs) return schedule(blockedUntilMs - now);
        if (!ref) {
          if (!pacing.dirty && queue.length === 0) return;
          postAttempts += 1;
          const result = await attempt('post', ensureRef, postAttempts);
          if (result.ok) postAttempts = 0;
          else if (!reportOnly) pacing.dirty = true;
          if (!result.ok && result.drop) {
            // Slack keeps refusing: try again after an interval, keeping the newest state and milestones.
            postAttempts = 0;
            blockedUntilMs = o.nowMs() + o.updateIntervalMs;
          }
          continue;
        }
        const next = queue[0];
        if (next) {
          const target = ref;
          next.attempts += 1;
          const result = await attempt(
            'reply',
            async () => {
              const message = redactMessage(next.message);
              await o.client.chat.postMessage({
                channel: target.channel,
                ...(target.ts ? { thread_ts: target.ts } : {}),
                text: message.text,
                blocks: message.blocks as never,
                unfurl_links: false,
              });
            },
            next.attempts,
          );
          if (result.ok || result.drop) queue.shift();
          if (result.drop)
            o.log('warn', `Slack: dropped a notification after ${next.attempts} attempts (${result.code}).`);
          if (result.ok && o.store)
            await o.store
              .patchNotes(o.migrationId, { milestone: o.redact(next.note), ...(next.notes ?? {}) })
              .catch(storeFailed);
          continue;
        }
        const delay = computeUpdateDelay(pacing, now, o.updateIntervalMs);
        if (delay === null) return;
        if (delay > 0) return schedule(delay);
        const target = ref;
        pacing.lastSentMs = now;
        pacing.dirty = false;
        updateAttempts += 1;
        const result = await attempt(
          'update',
          async () => {
            const message = redactMessage(renderProgressMessage(state, { runUrl: o.runUrl }));
            await o.client.chat.update({
              channel: target.channel,
              ts: target.ts,
              text: message.text,
              blocks: message.blocks as never,
            });
          },
          updateAttempts,
        );
        if (result.ok) {
          updateAttempts = 0;
          pacing.final = false;
        } else {
          // The newest state goes out with the next try; a dropped edit is simply superseded.
          pacing.dirty = true;
          if (result.drop) {
            updateAttempts = 0;
            blockedUntilMs = Math.max(blockedUntilMs, o.nowMs() + o.updateIntervalMs);
          }
        }
      }
    } finally {
      pumping = false;
    }
  };

  const enqueue = (m: Milestone) => {
    const message = renderMilestone(m);
    queue.push({
      message,
      note: message.text.split('\n')[0]?.slice(0, 200) ?? '',
      ...(m.kind === 'validation'
        ? {
            notes: {
              lastValidation: {
                ok: m.report.ok,
                tables: m.report.tables.length,
                differing: m.report.tables.filter((t) => !t.ok).length,
                checksum: m.report.checksum,
                atMs: o.nowMs(),
              },
            },
          }
        : {}),
      attempts: 0,
    });
    while (queue.length > MAX_QUEUED) {
      queue.shift();
      o.log('warn', 'Slack: too many notifications waiting; dropped the oldest.');
    }
  };

  return {
    handle(event) {
      if (closed || reportOnly) return;
      const result = reduceProgress(state, event, o.nowMs());
      state = result.state;
      if (result.changed) pacing.dirty = true;
      for (const m of result.milestones) enqueue(m);
      if (result.changed) kick();
    },
    fail(error) {
      if (closed) return;
      const result = reduceFailure(state, error, o.nowMs());
      state = result.state;
      pacing.dirty = !reportOnly;
      pacing.final = true;
      for (const m of result.milestones) enqueue(m);
      kick();
    },
    async flush(timeoutMs = 10_000) {
      if (closed) return;
      pacing.final = true;
      const deadline = o.nowMs() + timeoutMs;
      const idle = () => !pumping && queue.length === 0 && !pacing.dirty;
      kick();
      while (!idle() && o.nowMs() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        if (!pumping && o.nowMs() >= blockedUntilMs) kick();
      }
      closed = true;
      if (timer) clearTimeout(timer);
      if (!idle())
        o.log(
          'warn',
          `Slack: ${queue.length} notification(s) and the last edit were not delivered before exit (Slack did not answer in time).`,
        );
    },
    post(message, note, notes) {
      if (closed) return;
      queue.push({ message, note, ...(notes ? { notes } : {}), attempts: 0 });
      kick();
    },
    copyAlreadyDone() {
      state = { ...state, expectCopy: false };
    },
    state: () => state,
  };
}

/** A deep copy with every string passed through fn. */
function mapStrings<T>(value: T, fn: (s: string) => string): T {
  if (typeof value === 'string') return fn(value) as T;
  if (Array.isArray(value)) return value.map((v) => mapStrings(v, fn)) as T;
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, fn)])) as T;
  return value;
}
