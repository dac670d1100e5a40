// The bot in Socket Mode, its default transport, run as `pg-live-migrate bot` against the fake Slack's
// apps.connections.open and WebSocket, and a live migration on real clusters: it connects with the app
// token, acknowledges every envelope within Slack's 3 s, answers `/migrate status`, takes a four-eyes
// cutover approval that the replay then completes, keeps working after Slack asks it to reconnect, after a
// dropped connection and through a Slack outage while it reconnects, and stops with the fix when Slack
// refuses its app token.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BotProcess, botEnv, startBot } from '../helpers/bot-process';
import {
  assertNoLeaks,
  type CliProcess,
  createWriterTables,
  freshDatabases,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  waitFor,
} from '../helpers/clusters';
import {
  FAKE_APP_TOKEN,
  FAKE_BOT_TOKEN,
  type FakeMessage,
  type FakeSlack,
  findSecrets,
  hasButtons,
  messageText,
  startFakeSlack,
} from '../helpers/fake-slack';

const CHANNEL = 'CSOCKET';
const ALICE = 'UALICE';
const BOB = 'UBOB';
const ID = 'sock';
/** Put in the bot's connection strings (the clusters trust 127.0.0.1, so it is never checked). */
const PASSWORD = 'Sock3t/Pa55:w0rd@bot';

describe('Slack bot in Socket Mode', () => {
  let pair: Pair | undefined;
  let uris: { source: string; target: string };
  let botUris: { source: string; target: string };
  let slack: FakeSlack | undefined;
  let dir: string;
  let migrate: CliProcess | undefined;
  let bot: BotProcess | undefined;
  let n = 0;
  const common = () => ['--source', uris.source, '--target', uris.target, '--dir', dir, '--migration-id', ID];
  const fake = () => slack as FakeSlack;
  const command = (userId: string, text: string) => {
    const responseUrl = fake().responseUrl(`cmd-${++n}`);
    return {
      ack: fake().socket.command({ userId, text, channelId: CHANNEL, responseUrl }),
      path: responseUrl,
    };
  };
  const click = (userId: string, message: FakeMessage, actionId: string) => {
    const responseUrl = fake().responseUrl(`click-${++n}`);
    return { ack: fake().socket.click({ userId, message, actionId, responseUrl }), path: responseUrl };
  };
  const responseAt = (url: string) =>
    waitFor(() => fake().responses.find((r) => url.endsWith(r.path)), {
      timeoutMs: 15_000,
      what: `an answer at ${url}`,
    });
  /** waitFor, and on a timeout what the bot logged meanwhile. */
  const waitWithLog = <T>(
    condition: () => Promise<T | undefined | false> | T | undefined | false,
    what: string,
  ) =>
    waitFor(condition, { timeoutMs: 30_000, what }).catch((error: Error) => {
      throw new Error(`${error.message}; bot log:\n${bot?.log()}`);
    });
  const opens = () => fake().calls.filter((c) => c.method === 'apps.connections.open');
  const allText = () => [...fake().messages.values()].map(messageText).join('\n');
  /** `/migrate status` over the socket: acknowledged within 3 s, answered to the asker only. */
  const expectStatusAnswered = async () => {
    const asked = command(ALICE, `status ${ID}`);
    const ack = await asked.ack;
    expect(ack.ms).toBeLessThan(3000);
    const answer = (await responseAt(asked.path)).body;
    expect(answer.response_type).toBe('ephemeral');
    expect(JSON.stringify(answer)).toContain('Lag now');
  };
  const reconnected = (connections: number) =>
    waitWithLog(
      () => fake().socket.connections() >= connections && fake().socket.open() === 1,
      `connection ${connections}`,
    );

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'botsocket');
    const withPassword = (port: number) =>
      `postgresql://postgres:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/botsocket`;
    botUris = { source: withPassword(pair.source.port), target: withPassword(pair.target.port) };
    await createWriterTables(uris.source, 500);
    dir = `${pair.target.dataDir}-work`;
    migrate = spawnCli(['migrate', ...common(), '--lag-interval', '1s']);
    slack = await startFakeSlack();
    // Caught up: the replay reports its lag (none while it copies), so a cutover is accepted.
    await waitFor(
      async () => {
        const [r] = await query<{ lag: string | null }>(
          uris.target,
          `SELECT lag_bytes::text AS lag FROM _pg_live_migrate.replay WHERE migration_id = $1`,
          [ID],
        );
        return r?.lag != null && Number(r.lag) < 64 * 1024;
      },
      { timeoutMs: 60_000, what: 'the replay to catch up', intervalMs: 250 },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; migrate log:\n${migrate?.output().stderr}`);
    });
    bot = await startBot(slack, {
      SLACK_APP_TOKEN: FAKE_APP_TOKEN,
      SLACK_CHANNEL: CHANNEL,
      SOURCE: botUris.source,
      TARGET: botUris.target,
      PG_LIVE_MIGRATE_MIGRATION_ID: ID,
      PG_LIVE_MIGRATE_APPROVERS: `${ALICE},${BOB}`,
    });
  });

  afterAll(async () => {
    try {
      await bot?.stop();
      migrate?.child.kill('SIGKILL');
      await migrate?.result;
      if (pair) await runCli(['clean', ...common(), '--prune']);
      await rm(dir, { recursive: true, force: true });
      await slack?.close();
      if (pair) await assertNoLeaks(pair);
    } finally {
      await pair?.stop();
    }
  });

  it('connects with the app token through apps.connections.open and the URL it returns, greeted by hello', () => {
    expect(bot?.log()).toContain('pg-live-migrate bot ready (Socket Mode');
    expect(opens()).toHaveLength(1);
    // The app token only ever travels in the Authorization header of apps.connections.open.
    expect(opens()[0]?.authorization).toBe(`Bearer ${FAKE_APP_TOKEN}`);
    expect(opens()[0]?.body).toBe('');
    expect(fake().calls.filter((c) => c.authorization?.includes(FAKE_APP_TOKEN))).toEqual(opens());
    expect(fake().socket.connections()).toBe(1);
    expect(fake().socket.open()).toBe(1);
  });

  it('/migrate status over the socket is acknowledged within 3 s and answered only to the asker', async () => {
    const asked = command(ALICE, `status ${ID}`);
    const ack = await asked.ack;
    expect(ack.ms).toBeLessThan(3000);
    // An empty ack: the answer goes to response_url, as in HTTP mode.
    expect(ack.payload).toEqual({});
    const answer = (await responseAt(asked.path)).body;
    expect(answer.response_type).toBe('ephemeral');
    const text = JSON.stringify(answer);
    expect(text).toContain('Lag now');
    expect(text).toContain('*replay:* running');
  });

  it('/migrate cutover by Alice: her own approval is refused, Bob approves, the replay completes the cutover', async () => {
    const asked = command(ALICE, `cutover ${ID}`);
    expect((await asked.ack).ms).toBeLessThan(3000);
    const approval = await waitWithLog(
      () =>
        [...fake().messages.values()].find(
          (m) => m.text.includes(`Cutover of ${ID} requested`) && hasButtons(m),
        ),
      'the approval request',
    );
    const snapshot: FakeMessage = { ...approval, blocks: [...approval.blocks] };

    const refused = click(ALICE, snapshot, 'plm_cutover_approve');
    expect((await refused.ack).ms).toBeLessThan(3000);
    expect(JSON.stringify((await responseAt(refused.path)).body)).toContain('requester cannot approve');
    expect(hasButtons(approval)).toBe(true);
    expect(await query(uris.target, 'SELECT id FROM _pg_live_migrate.request')).toEqual([]);

    const approved = click(BOB, snapshot, 'plm_cutover_approve');
    expect((await approved.ack).ms).toBeLessThan(3000);
    const [request] = await waitFor(
      async () => {
        const rows = await query<{ kind: string; state: string }>(
          uris.target,
          'SELECT kind, state FROM _pg_live_migrate.request WHERE migration_id = $1',
          [ID],
        );
        return rows.length > 0 ? rows : undefined;
      },
      { timeoutMs: 15_000, what: 'the cutover request on the target' },
    );
    expect(request?.kind).toBe('cutover');
    const result = await migrate?.result;
    expect(result?.code, result?.stderr).toBe(0);
    await waitFor(() => allText().includes('The cutover request completed'), {
      timeoutMs: 15_000,
      what: "the bot's outcome",
    }).catch((error: Error) => {
      throw new Error(`${error.message}; Slack:\n${allText()}`);
    });
    expect(messageText(approval)).toContain(`<@${BOB}>`);
    expect(hasButtons(approval)).toBe(false);
    const [done] = await query<{ state: string }>(
      uris.target,
      'SELECT state FROM _pg_live_migrate.request WHERE migration_id = $1',
      [ID],
    );
    expect(done?.state).toBe('done');
  });

  it('reconnects when Slack asks for a refresh and when the connection drops; later envelopes still work', async () => {
    fake().socket.disconnect('refresh_requested');
    await reconnected(2);
    expect(opens()).toHaveLength(2);
    await expectStatusAnswered();

    fake().socket.drop();
    await reconnected(3);
    expect(opens()).toHaveLength(3);
    await expectStatusAnswered();
    expect(bot?.log().match(/Socket Mode connection open again/g)).toHaveLength(2);
  });

  it('keeps trying apps.connections.open through a Slack outage and reconnects once Slack is back', async () => {
    const before = opens().length;
    fake().setDown(true);
    fake().socket.drop();
    await waitWithLog(() => opens().length >= before + 2, 'two refused apps.connections.open');
    expect(bot?.cli.child.exitCode).toBeNull();
    fake().setDown(false);
    await reconnected(4);
    await expectStatusAnswered();
  });

  it('stops at start with the fix when Slack refuses the app token, without printing it', async () => {
    const wrong = 'xapp-1-A0FAKE-1-not-the-app-token-0000';
    const result = await runCli(['bot'], {
      env: botEnv(fake(), {
        SLACK_APP_TOKEN: wrong,
        TARGET: botUris.target,
        PG_LIVE_MIGRATE_MIGRATION_ID: ID,
      }),
    });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      'CONFIG_INVALID_OPTION: Slack refused to open a Socket Mode connection with SLACK_APP_TOKEN: invalid_auth.',
    );
    expect(result.stderr).toContain('connections:write');
    expect(result.stderr).not.toContain(wrong);
  });

  it('stops at start with the fix when Slack refuses the bot token, without printing it', async () => {
    const wrong = 'xoxb-not-the-bot-token-0000';
    const result = await runCli(['bot'], {
      env: botEnv(fake(), {
        SLACK_BOT_TOKEN: wrong,
        SLACK_APP_TOKEN: FAKE_APP_TOKEN,
        TARGET: botUris.target,
        PG_LIVE_MIGRATE_MIGRATION_ID: ID,
      }),
    });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('CONFIG_INVALID_OPTION: Slack refused SLACK_BOT_TOKEN: invalid_auth.');
    expect(result.stderr).not.toContain('ready');
    expect(result.stderr).not.toContain(wrong);
  });

  it('no token, password or connection string appears in anything sent to Slack or in the log', () => {
    expect(fake().socket.received.length).toBeGreaterThan(5);
    expect(
      findSecrets(fake(), {
        'app token': FAKE_APP_TOKEN,
        'bot token': FAKE_BOT_TOKEN,
        password: PASSWORD,
        'source URI': botUris.source,
        'target URI': botUris.target,
      }),
    ).toEqual([]);
    for (const secret of [FAKE_APP_TOKEN, FAKE_BOT_TOKEN, PASSWORD, encodeURIComponent(PASSWORD)])
      expect(bot?.log()).not.toContain(secret);
  });
});
