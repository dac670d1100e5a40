// The whole Slack story on real clusters, through the built dist/cli.js and dist/bot.js and the fake Slack:
// a migration posts one message and edits it as its lag changes; `/migrate cutover` by Alice, whose own
// approval is refused, approved by Bob; the cutover completes; validation tables land in the thread;
// `/migrate clean --prune` removes the slot. Requests are signed like Slack's (forged and stale refused).
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BotProcess, startBot } from '../helpers/bot-process';
import {
  assertNoLeaks,
  type CliProcess,
  createRandom,
  createWriterTables,
  freshDatabases,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  startWriter,
  type Writer,
  waitFor,
} from '../helpers/clusters';
import {
  FAKE_BOT_TOKEN,
  type FakeMessage,
  type FakeSlack,
  findSecrets,
  hasButtons,
  messageText,
  receivedContent,
  sendButtonClick,
  sendSlashCommand,
  startFakeSlack,
} from '../helpers/fake-slack';

const SECRET = 'signing-secret-for-tests';
const CHANNEL = 'CMIGRATE';
const ALICE = 'UALICE';
const BOB = 'UBOB';
const CAROL = 'UCAROL';
const ID = 'story';

describe('Slack bot and notifications, the whole story', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let slack: FakeSlack;
  let dir: string;
  let migrate: CliProcess | undefined;
  let writer: Writer | undefined;
  let bot: BotProcess | undefined;
  let botUrl = '';
  let root: FakeMessage | undefined;
  let approval: FakeMessage | undefined;
  let approvalSnapshot: FakeMessage | undefined;
  let responses = 0;
  const common = () => ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', ID];
  const signed = { secret: SECRET };
  const command = (userId: string, text: string) =>
    sendSlashCommand(
      botUrl,
      { userId, text, channelId: CHANNEL, responseUrl: slack.responseUrl(`cmd-${++responses}`) },
      signed,
    );
  const click = (userId: string, message: FakeMessage, actionId: string) =>
    sendButtonClick(
      botUrl,
      { userId, message, actionId, responseUrl: slack.responseUrl(`click-${++responses}`) },
      signed,
    );
  const responseTo = (n: number) =>
    waitFor(() => slack.responses.find((r) => r.path === `/response/${n}` || r.path.endsWith(`-${n}`)), {
      timeoutMs: 30_000,
      what: `response ${n}`,
    });
  const threadText = () =>
    slack
      .thread(root?.ts ?? '')
      .map(messageText)
      .join('\n');

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'botstory');
    await createWriterTables(uris.source, 3000);
    slack = await startFakeSlack();
    slack.setGroup('SAPPROVERS', [CAROL]);
    dir = `${pair.target.dataDir}-work`;
    writer = startWriter(uris.source, { random: createRandom(11), prefilled: 3000, pauseMs: 2 });
    migrate = spawnCli(
      [
        'migrate',
        ...common(),
        '--lag-interval',
        '1s',
        '--lag-target',
        '64KB',
        '--table-jobs',
        '2',
        '--index-jobs',
        '2',
      ],
      {
        env: {
          SLACK_BOT_TOKEN: FAKE_BOT_TOKEN,
          SLACK_CHANNEL: CHANNEL,
          SLACK_API_URL: slack.apiUrl,
          PG_LIVE_MIGRATE_SLACK_UPDATE_MS: '1000',
        },
      },
    );
    bot = await startBot(slack, {
      SLACK_SIGNING_SECRET: SECRET,
      PORT: '0',
      SLACK_CHANNEL: CHANNEL,
      SOURCE: uris.source,
      TARGET: uris.target,
      PG_LIVE_MIGRATE_MIGRATION_ID: ID,
      PG_LIVE_MIGRATE_APPROVERS: BOB,
      PG_LIVE_MIGRATE_APPROVER_GROUP: 'SAPPROVERS',
    });
    botUrl = `http://127.0.0.1:${bot.port}`;
  });

  afterAll(async () => {
    try {
      await writer?.stop();
      migrate?.child.kill('SIGKILL');
      await migrate?.result;
      await bot?.stop();
      await runCli(['clean', ...common(), '--prune']);
      await rm(dir, { recursive: true, force: true });
      await slack.close();
      await assertNoLeaks(pair);
    } finally {
      await pair.stop();
    }
  });

  it('posts one message for the migration and edits it as the lag changes, with milestones in its thread', async () => {
    root = await waitFor(() => slack.roots(CHANNEL).find((m) => m.edits >= 3 && m.text.includes('lag')), {
      timeoutMs: 60_000,
      what: `the live message (migrate log:\n${migrate?.output().stderr})`,
    });
    expect(slack.roots(CHANNEL)).toHaveLength(1);
    const lagTexts = new Set(
      slack.calls
        .filter((c) => c.method === 'chat.update' && c.args.ts === root?.ts)
        .map((c) => String(c.args.text)),
    );
    expect(lagTexts.size).toBeGreaterThanOrEqual(2);
    await waitFor(() => threadText().includes('Copy finished'), {
      timeoutMs: 30_000,
      what: 'copy finished in the thread',
    });
    await waitFor(() => threadText().includes('caught up'), {
      timeoutMs: 30_000,
      what: 'caught up in the thread',
    });
    const order = slack.thread(root.ts).map((m) => m.text);
    const at = (text: string) => order.findIndex((t) => t.includes(text));
    expect(at('Copy started')).toBe(0);
    expect(at('Copy finished')).toBeLessThan(at('caught up'));
    // The ref is on the target, so a resumed run edits the same message.
    const [row] = await query<{ ts: string }>(
      uris.target,
      `SELECT ts FROM _pg_live_migrate.slack_message WHERE migration_id = $1 AND kind = 'progress'`,
      [ID],
    );
    expect(row?.ts).toBe(root.ts);
  });

  it('refuses forged and stale requests, and answers an unknown subcommand with usage within 3 s', async () => {
    const forged = await sendSlashCommand(
      botUrl,
      { userId: ALICE, text: 'status', channelId: CHANNEL, responseUrl: slack.responseUrl('forged') },
      { secret: SECRET, forgeWith: 'not-the-secret' },
    );
    expect(forged.status).toBe(401);
    const stale = await sendSlashCommand(
      botUrl,
      { userId: ALICE, text: 'status', channelId: CHANNEL, responseUrl: slack.responseUrl('stale') },
      { secret: SECRET, timestampSec: Math.floor(Date.now() / 1000) - 600 },
    );
    expect(stale.status).toBe(401);
    const unknown = await command(ALICE, 'frobnicate');
    expect(unknown.status).toBe(200);
    expect(unknown.ms).toBeLessThan(3000);
    const usage = await responseTo(responses);
    expect(JSON.stringify(usage.body)).toContain('Unknown subcommand');
    expect(JSON.stringify(usage.body)).toContain('/migrate status');
    expect(slack.responses.some((r) => r.path.includes('forged') || r.path.includes('stale'))).toBe(false);
  });

  it('/migrate status answers only the asker: phase, lag, ETA and the last milestones', async () => {
    const answer = await command(ALICE, `status ${ID}`);
    expect(answer.ms).toBeLessThan(3000);
    const body = (await responseTo(responses)).body;
    expect(body.response_type).toBe('ephemeral');
    const text = JSON.stringify(body);
    expect(text).toContain('Lag now');
    expect(text).toContain('ETA');
    expect(text).toContain('Last milestones');
  });

  it('/migrate cutover by Alice: her approval is refused, Bob approves, the cutover completes', async () => {
    await writer?.stop();
    writer = undefined;
    await waitFor(
      async () => {
        const [r] = await query<{ lag: string }>(
          uris.target,
          `SELECT lag_bytes::text AS lag FROM _pg_live_migrate.replay WHERE migration_id = $1`,
          [ID],
        );
        return r && Number(r.lag) < 64 * 1024;
      },
      { timeoutMs: 60_000, what: 'the replay to catch up' },
    );
    const asked = await command(ALICE, `cutover ${ID}`);
    expect(asked.status).toBe(200);
    expect(asked.ms).toBeLessThan(3000);
    approval = await waitFor(
      () =>
        slack
          .thread(root?.ts ?? '')
          .find((m) => m.text.includes('Cutover of story requested') && hasButtons(m)),
      {
        timeoutMs: 30_000,
        what: 'the approval request',
      },
    );
    expect(hasButtons(approval)).toBe(true);
    expect(messageText(approval)).toContain('Lag now');
    approvalSnapshot = { ...approval, blocks: [...approval.blocks] };

    await click(ALICE, approvalSnapshot, 'plm_cutover_approve');
    const refusal = await responseTo(responses);
    expect(JSON.stringify(refusal.body)).toContain('requester cannot approve');
    await waitFor(() => threadText().includes('tried to approve the cutover: refused'), {
      timeoutMs: 10_000,
      what: 'the refusal in the thread',
    });
    expect(hasButtons(approval)).toBe(true);

    const approved = await click(BOB, approvalSnapshot, 'plm_cutover_approve');
    expect(approved.ms).toBeLessThan(3000);
    await waitFor(
      () => !hasButtons(approval as FakeMessage) && messageText(approval as FakeMessage).includes('Approved'),
      {
        timeoutMs: 10_000,
        what: 'the approval message to show the decision',
      },
    );
    expect(messageText(approval)).toContain(`<@${BOB}>`);
    const result = await migrate?.result;
    expect(result?.code, result?.stderr).toBe(0);
    await waitFor(() => threadText().includes('Cutover done'), {
      timeoutMs: 15_000,
      what: 'cutover done in the thread',
    });
    await waitFor(() => threadText().includes('cutover request completed'), {
      timeoutMs: 15_000,
      what: "the bot's outcome",
    });
    expect(threadText()).toContain('Cutover *approved* by <@UBOB>');
    // The cutover's validation, as a table.
    expect(threadText()).toContain('Validation passed');
    expect(messageText(root as FakeMessage)).toContain('done');
  });

  it('a second click on a decided approval does nothing', async () => {
    const before = {
      thread: slack.thread(root?.ts ?? '').length,
      responses: slack.responses.length,
      edits: approval?.edits,
    };
    const again = await click(BOB, approvalSnapshot as FakeMessage, 'plm_cutover_approve');
    expect(again.status).toBe(200);
    await new Promise((r) => setTimeout(r, 1500));
    expect(slack.thread(root?.ts ?? '').length).toBe(before.thread);
    expect(slack.responses.length).toBe(before.responses);
    expect(approval?.edits).toBe(before.edits);
  });

  it('/migrate validate --checksum posts the validation table in the thread', async () => {
    const count = slack.thread(root?.ts ?? '').length;
    await command(CAROL, `validate ${ID} --checksum`);
    const table = await waitFor(
      () =>
        slack
          .thread(root?.ts ?? '')
          .slice(count)
          .find((m) => m.text.includes('Validation passed')),
      { timeoutMs: 60_000, what: 'the validation table' },
    );
    expect(messageText(table)).toContain('public.items');
    expect(messageText(table)).toContain('checksum');
  });

  it('/migrate clean --prune asks an approver to confirm, then removes the slot and reports it', async () => {
    await command(ALICE, `clean ${ID} --prune`);
    expect(JSON.stringify((await responseTo(responses)).body)).toContain('Refused');
    await command(BOB, `clean ${ID} --prune`);
    const confirm = (await responseTo(responses)).body as { blocks?: unknown[]; text?: string };
    const button = JSON.stringify(confirm.blocks);
    expect(button).toContain('"confirm"');
    const ephemeral: FakeMessage = {
      channel: CHANNEL,
      ts: '',
      text: String(confirm.text),
      blocks: confirm.blocks ?? [],
      threadTs: undefined,
      edits: 0,
    };
    await click(BOB, ephemeral, 'plm_clean_confirm');
    await waitFor(() => threadText().includes('Cleaned `story`'), {
      timeoutMs: 30_000,
      what: 'the clean report',
    });
    expect(threadText()).toContain('the replication slot');
    const slots = await query(uris.source, 'SELECT slot_name FROM pg_replication_slots');
    expect(slots).toEqual([]);
    // A second click on the same confirmation does nothing.
    const threadBefore = slack.thread(root?.ts ?? '').length;
    await click(BOB, ephemeral, 'plm_clean_confirm');
    await new Promise((r) => setTimeout(r, 1000));
    expect(slack.thread(root?.ts ?? '').length).toBe(threadBefore);
  });

  it('no token, signing secret or connection string appears in anything sent to Slack', () => {
    // The Web API client authenticates with the token (a header, or Bolt's `token` argument): that is
    // authentication, not content. Everything else must be clean.
    expect(receivedContent(slack).length).toBeGreaterThan(10);
    expect(
      findSecrets(slack, {
        'bot token': FAKE_BOT_TOKEN,
        'signing secret': SECRET,
        'source URI': uris.source,
        'target URI': uris.target,
      }),
    ).toEqual([]);
    expect(bot?.log()).not.toContain(FAKE_BOT_TOKEN);
  });
});
