// The Slack notifier with the real Web API client against the fake Slack: one message per migration, edits
// coalesced within the rate limit under a fast-changing lag, milestones in the thread, 429s and outages
// absorbed without slowing the caller, and secrets kept out of every payload.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSlackNotifier, type SlackNotifier } from '../../src/adapters/slack/notifier';
import { createSlackClient } from '../../src/adapters/slack/web-client';
import type { MigrationEvent } from '../../src/core/events';
import { createRedactor } from '../../src/core/redact';
import type { MessageRef, MessageRefStore, MigrationNotes } from '../../src/core/slack-ports';
import { waitFor } from '../helpers/clusters';
import { FAKE_BOT_TOKEN, type FakeSlack, messageText, startFakeSlack } from '../helpers/fake-slack';

/** The port as a map: what the target's slack_message table does, without a server. */
function memoryStore(): MessageRefStore & { refs: Map<string, MessageRef> } {
  const refs = new Map<string, MessageRef>();
  const notes = new Map<string, MigrationNotes>();
  return {
    refs,
    get: async (id) => {
      const ref = refs.get(id);
      return ref
        ? { ...ref, notes: notes.get(id) ?? { milestones: [], lastValidation: null, runUrl: null } }
        : undefined;
    },
    put: async (id, ref, options) => {
      if (!refs.has(id) || options?.replace) refs.set(id, ref);
      return refs.get(id) as MessageRef;
    },
    patchNotes: async () => undefined,
  };
}

const lag = (
  lagBytes: number,
  extra: Partial<Extract<MigrationEvent, { type: 'replay:lag' }>> = {},
): MigrationEvent => ({
  type: 'replay:lag',
  lagBytes,
  lagSeconds: lagBytes / 1e6,
  sourceLsn: '0/10',
  appliedLsn: '0/1',
  sourceWalRate: 1e6,
  replayRate: 2e6,
  etaSeconds: lagBytes / 1e6,
  caughtUp: lagBytes <= 500 * 1024,
  retainedBytes: null,
  ...extra,
});

describe('Slack notifier', () => {
  let slack: FakeSlack;
  const logs: string[] = [];
  const secret = 'pw-s3cret-value';
  const redactor = createRedactor([secret, FAKE_BOT_TOKEN]);
  const make = (o: {
    channel: string;
    store?: MessageRefStore;
    intervalMs?: number;
    nowMs?: () => number;
    lagTarget?: { bytes: number };
  }): SlackNotifier =>
    createSlackNotifier({
      client: createSlackClient({ token: FAKE_BOT_TOKEN, apiUrl: slack.apiUrl, timeoutMs: 2000 }),
      channel: o.channel,
      migrationId: 'orders',
      store: o.store,
      nowMs: o.nowMs ?? Date.now,
      lagTarget: o.lagTarget ?? { bytes: 1024 * 1024 },
      updateIntervalMs: o.intervalMs ?? 500,
      expectCopy: false,
      runUrl: 'https://github.example/o/r/actions/runs/7',
      redact: (t) => redactor.redact(t),
      log: (level, message) => logs.push(`${level} ${message}`),
    });

  const reportOptions = () => ({
    client: createSlackClient({ token: FAKE_BOT_TOKEN, apiUrl: slack.apiUrl, timeoutMs: 2000 }),
    channel: 'CREP',
    migrationId: 'orders',
    store: undefined as MessageRefStore | undefined,
    nowMs: Date.now,
    lagTarget: null,
    updateIntervalMs: 500,
    runUrl: null,
    expectCopy: false,
    mode: 'report' as const,
    redact: (t: string) => redactor.redact(t),
    log: (level: string, message: string) => logs.push(`${level} ${message}`),
  });

  beforeAll(async () => {
    slack = await startFakeSlack();
  });
  afterAll(async () => {
    await slack.close();
  });

  it('edits one message at most once per interval while the lag changes every few milliseconds, and ends on the newest state', async () => {
    const notifier = make({ channel: 'CRATE', intervalMs: 500 });
    const started = Date.now();
    let handleMs = 0;
    let i = 0;
    while (Date.now() - started < 3000) {
      const t = performance.now();
      notifier.handle(lag(10_000_000 - i * 1000));
      handleMs += performance.now() - t;
      i += 1;
      await new Promise((r) => setTimeout(r, 3));
    }
    notifier.handle(lag(123));
    await notifier.flush(5000);
    const roots = slack.roots('CRATE');
    expect(roots).toHaveLength(1);
    const root = roots[0];
    const updates = slack.calls.filter((c) => c.method === 'chat.update' && c.args.channel === 'CRATE');
    // ~3 s at one edit per 500 ms, plus the final one at flush.
    expect(updates.length).toBeGreaterThanOrEqual(3);
    expect(updates.length).toBeLessThanOrEqual(3000 / 500 + 2);
    const gaps = updates.slice(1, -1).map((u, k) => u.atMs - (updates[k]?.atMs ?? 0));
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(450);
    expect(i).toBeGreaterThan(300);
    // handle() is synchronous bookkeeping only.
    expect(handleMs / i).toBeLessThan(1);
    expect(root && messageText(root)).toContain('123 B');
    expect(root && messageText(root)).toContain('within');
  });

  it('posts milestones in the thread: copy started and finished, caught up, lag breached and recovered once each', async () => {
    let now = 1_000_000;
    const notifier = make({ channel: 'CMILE', nowMs: () => now, intervalMs: 1000 });
    const emit = (e: MigrationEvent, advanceMs = 0) => {
      now += advanceMs;
      notifier.handle(e);
    };
    emit({ type: 'copy:plan', tables: 2, parts: 3, partsDone: 0, estBytes: 3000, rowsDone: 0, bytesDone: 0 });
    emit({
      type: 'copy:part:start',
      partId: 1,
      table: 'public.a',
      partIndex: 0,
      partCount: 2,
      estBytes: 1000,
    });
    emit({ type: 'copy:part:done', partId: 1, table: 'public.a', rows: 10, bytes: 1000, seconds: 1 }, 1000);
    emit({ type: 'copy:done', rows: 30, bytes: 3000, seconds: 3 }, 2000);
    emit(lag(50_000_000), 1000);
    emit(lag(100_000), 10_000);
    // Hovering around the 1 MiB target: no alert until it stays above for 30 s.
    for (let k = 0; k < 5; k++) {
      emit(lag(2_000_000), 5_000);
      emit(lag(900_000), 5_000);
    }
    for (let k = 0; k < 5; k++) emit(lag(3_000_000), 10_000);
    for (let k = 0; k < 5; k++) emit(lag(100_000), 10_000);
    await notifier.flush(5000);
    const root = slack.roots('CMILE')[0];
    expect(root).toBeDefined();
    const thread = slack.thread(root?.ts ?? '').map((m) => m.text);
    expect(thread).toEqual([
      expect.stringContaining('Copy started: 2 tables in 3 parts'),
      expect.stringContaining('Copy finished: 30 rows'),
      expect.stringContaining('caught up'),
      expect.stringContaining('Lag above the target of 1.0 MB'),
      expect.stringContaining('Lag back within the target of 1.0 MB'),
    ]);
  });

  it('waits out 429 Retry-After, keeps handle() fast, and a resumed run edits the same message', async () => {
    const store = memoryStore();
    const first = make({ channel: 'C429', store });
    first.handle(lag(5_000_000));
    await first.flush(5000);
    const rootTs = store.refs.get('orders')?.ts;
    expect(rootTs).toBeDefined();

    slack.rateLimit('chat.update', 2, 1);
    slack.rateLimit('chat.postMessage', 1, 1);
    const resumed = make({ channel: 'C429', store });
    const t = performance.now();
    resumed.handle({ type: 'copy:done', rows: 5, bytes: 5, seconds: 1 });
    resumed.handle(lag(42));
    expect(performance.now() - t).toBeLessThan(50);
    await resumed.flush(10_000);
    expect(slack.roots('C429')).toHaveLength(1);
    const root = slack.messages.get(rootTs ?? '');
    expect(root && messageText(root)).toContain('42 B');
    expect(slack.thread(rootTs ?? '').map((m) => m.text)).toContainEqual(
      expect.stringContaining('Copy finished'),
    );
    expect(
      slack.calls.filter((c) => c.method === 'chat.update' && c.args.channel === 'C429').length,
    ).toBeGreaterThanOrEqual(3);
  });

  it('gives up within its bound while Slack is down, with a log line, and never throws', async () => {
    slack.setDown(true);
    try {
      const notifier = make({ channel: 'CDOWN' });
      notifier.handle(lag(1000));
      notifier.fail({ code: 'REPLAY_STREAM_FAILED', message: 'boom', hint: 'resume' });
      const t = Date.now();
      await notifier.flush(1500);
      expect(Date.now() - t).toBeLessThan(3000);
      expect(logs.some((l) => l.includes('not delivered before exit'))).toBe(true);
    } finally {
      slack.setDown(false);
    }
  });

  it('posts an error with its code, what happened and the fix, with secrets masked', async () => {
    const notifier = make({ channel: 'CERR' });
    notifier.handle(lag(1000));
    notifier.fail({
      code: 'CONNECTION_FAILED',
      message: `Could not reach the source (postgresql://app:${secret}@db:5432/shop): refused.`,
      hint: `Check db:5432; token ${FAKE_BOT_TOKEN} must never show.`,
    });
    await notifier.flush(5000);
    const root = slack.roots('CERR')[0];
    const reply = slack.thread(root?.ts ?? '').find((m) => m.text.includes('CONNECTION_FAILED'));
    expect(reply && messageText(reply)).toContain('CONNECTION_FAILED');
    expect(reply && messageText(reply)).toContain('What happened');
    expect(reply && messageText(reply)).toContain('Fix:');
    expect(root && messageText(root)).toContain('stopped with an error');
    const bodies = slack.calls.filter((c) => c.args.channel === 'CERR').map((c) => c.body);
    for (const body of bodies) {
      expect(body).not.toContain(secret);
      expect(body).not.toContain(encodeURIComponent(FAKE_BOT_TOKEN));
      expect(body).not.toContain(FAKE_BOT_TOKEN);
    }
  });

  it('in report mode (validate, clean) posts into the recorded thread and never records a message', async () => {
    const store = memoryStore();
    const live = make({ channel: 'CREP', store });
    live.handle(lag(1000));
    await live.flush(5000);
    const rootTs = store.refs.get('orders')?.ts ?? '';
    const report = createSlackNotifier({ ...reportOptions(), store });
    report.handle(lag(999_999));
    report.post({ text: 'Validation passed', blocks: [] }, 'Validation passed');
    await report.flush(5000);
    expect(slack.thread(rootTs).map((m) => m.text)).toContain('Validation passed');
    expect(slack.messages.get(rootTs)?.edits ?? 0).toBe(0);

    const empty = memoryStore();
    const orphan = createSlackNotifier({ ...reportOptions(), channel: 'CREP2', store: empty });
    orphan.post({ text: 'Cleaned', blocks: [] }, 'Cleaned');
    await orphan.flush(5000);
    expect(slack.roots('CREP2').map((m) => m.text)).toEqual(['Cleaned']);
    expect(empty.refs.size).toBe(0);
  });

  it('waits for the first event before posting anything', async () => {
    make({ channel: 'CIDLE' });
    await waitFor(() => true, { timeoutMs: 100 });
    expect(slack.roots('CIDLE')).toHaveLength(0);
  });
});
