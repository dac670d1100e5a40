// The bot with GitHub configured (dist/bot.js against the fake Slack and the fake GitHub REST API): an
// approved cutover approves the waiting job through the run's deployment_protection_rule endpoint (with
// status reports that carry the lag), falls back to a workflow dispatch when no job waits, a rejection
// rejects the job, validate is dispatched, and the GitHub App webhook is verified.
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withClient } from '../../src/adapters/postgres/client';
import { parseConnInfo } from '../../src/adapters/postgres/connection';
import {
  CONTROL_SCHEMA,
  ensureControlSchema,
  insertMigration,
} from '../../src/adapters/postgres/control-schema';
import {
  findPgBinDir,
  type LocalCluster,
  startLocalCluster,
} from '../../src/adapters/postgres/local-cluster';
import { type BotProcess, startBot } from '../helpers/bot-process';
import { query, waitFor } from '../helpers/clusters';
import { type FakeGitHub, startFakeGitHub } from '../helpers/fake-github-app';
import {
  type FakeMessage,
  type FakeSlack,
  findSecrets,
  hasButtons,
  messageText,
  sendButtonClick,
  sendSlashCommand,
  startFakeSlack,
} from '../helpers/fake-slack';

const SECRET = 'signing-secret-for-github-tests';
const GITHUB_TOKEN = 'ghs_fakeInstallationToken0123456789';
const WEBHOOK_SECRET = 'webhook-secret-0123';
const CHANNEL = 'CGH';
const ENVIRONMENT = 'pg-live-migrate-cutover';

describe('Slack bot with GitHub: protection rule, dispatch fallback, webhook', () => {
  let target: LocalCluster;
  let targetUri: string;
  let slack: FakeSlack;
  let github: FakeGitHub;
  let bot: BotProcess | undefined;
  let botUrl = '';
  let n = 0;
  const signed = { secret: SECRET };
  const command = (userId: string, text: string) =>
    sendSlashCommand(
      botUrl,
      { userId, text, channelId: CHANNEL, responseUrl: slack.responseUrl(`cmd-${++n}`) },
      signed,
    );
  const click = (userId: string, message: FakeMessage, actionId: string) =>
    sendButtonClick(
      botUrl,
      { userId, message, actionId, responseUrl: slack.responseUrl(`click-${++n}`) },
      signed,
    );
  const allText = () => [...slack.messages.values()].map(messageText).join('\n');
  const approvals = () =>
    [...slack.messages.values()].filter((m) => m.text.includes('Cutover of shop requested'));
  const requestApproval = async (userId: string) => {
    const before = approvals().length;
    const asked = await command(userId, 'cutover shop');
    expect(asked.ms).toBeLessThan(3000);
    return waitFor(() => approvals().slice(before).find(hasButtons), {
      timeoutMs: 20_000,
      what: 'the approval request',
    });
  };

  beforeAll(async () => {
    const binDir = await findPgBinDir(process.env);
    if (!binDir) throw new Error('No PostgreSQL server binaries found');
    target = await startLocalCluster({ name: 'target', binDir });
    await query(target.uri(), 'CREATE DATABASE ghbot');
    targetUri = target.uri('ghbot');
    // A migration replaying right now, as the target records it.
    await withClient(parseConnInfo(targetUri, 'target'), async (c) => {
      await ensureControlSchema(c);
      await insertMigration(c, {
        migrationId: 'shop',
        phase: 'replay',
        slotName: 'pg_live_migrate_shop',
        publications: [],
        snapshotName: null,
        snapshotHolderPid: null,
        consistentLsn: '0/1000000',
        schemas: null,
      });
      await c.query(
        `INSERT INTO "${CONTROL_SCHEMA}".replay (migration_id, applied_lsn, source_lsn, lag_bytes, lag_seconds, source_wal_rate, replay_rate, heartbeat_at)
         VALUES ('shop', '0/2000000', '0/2001000', 4096, 0.2, 1000, 5000, now())`,
      );
    });
    slack = await startFakeSlack();
    // The bot authenticates as a GitHub App: it signs a JWT with the App's key and mints installation tokens.
    const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    github = await startFakeGitHub({
      owner: 'acme',
      repo: 'shop-infra',
      token: GITHUB_TOKEN,
      app: { appId: '4242', installationId: 777, publicKey: keys.publicKey },
    });
    bot = await startBot(slack, {
      SLACK_SIGNING_SECRET: SECRET,
      PORT: '0',
      SLACK_CHANNEL: CHANNEL,
      TARGET: targetUri,
      PG_LIVE_MIGRATE_MIGRATION_ID: 'shop',
      PG_LIVE_MIGRATE_APPROVERS: 'UBOB,UCAROL',
      GITHUB_APP_ID: '4242',
      GITHUB_APP_INSTALLATION_ID: '777',
      GITHUB_APP_PRIVATE_KEY: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      GITHUB_REPOSITORY: 'acme/shop-infra',
      GITHUB_API_URL: github.url,
      GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET,
      PG_LIVE_MIGRATE_WORKFLOW: 'pg-live-migrate-command.yml',
    });
    botUrl = `http://127.0.0.1:${bot.port}`;
  });

  afterAll(async () => {
    await bot?.stop();
    await slack?.close();
    await github?.close();
    await target?.stop();
  });

  it('approves the waiting cutover job through its deployment protection rule, with the lag in the status reports', async () => {
    github.runs.push({
      id: 42,
      name: 'Migrate the shop database',
      displayTitle: 'Migrate shop',
      status: 'waiting',
      waitingEnvironments: [ENVIRONMENT],
    });
    const approval = await requestApproval('UALICE');
    expect(messageText(approval)).toContain('4.0 kB');
    // A status report (no state) on the waiting gate when the approval is requested.
    await waitFor(() => github.reviews().find((r) => r.runId === 42 && r.body.state === undefined), {
      timeoutMs: 10_000,
      what: 'the status report',
    });
    const report = github.reviews().find((r) => r.runId === 42 && r.body.state === undefined);
    expect(report?.body).toMatchObject({
      environment_name: ENVIRONMENT,
      comment: expect.stringContaining('lag 4.0 kB'),
    });

    await click('UBOB', approval, 'plm_cutover_approve');
    const review = await waitFor(
      () => github.reviews().find((r) => r.runId === 42 && r.body.state === 'approved'),
      { timeoutMs: 15_000, what: 'the approval' },
    );
    expect(review.body).toMatchObject({
      environment_name: ENVIRONMENT,
      comment: expect.stringContaining('Approved in Slack by UBOB'),
    });
    expect(String(review.body.comment)).toContain('lag 4.0 kB');
    await waitFor(() => allText().includes('Approved the waiting cutover job'), {
      timeoutMs: 10_000,
      what: 'the audit line',
    });
    expect(hasButtons(approval)).toBe(false);
    expect(github.dispatches()).toEqual([]);
    // Every REST call carried the installation token minted from a valid App JWT.
    expect(github.mintedTokens()).toBeGreaterThan(0);
    expect(
      github.calls
        .filter((c) => !c.path.startsWith('/app/'))
        .every((c) => c.authorization === `token ${GITHUB_TOKEN}`),
    ).toBe(true);
  });

  it('dispatches the workflow with command: cutover when no job waits', async () => {
    const approval = await requestApproval('UALICE');
    await click('UCAROL', approval, 'plm_cutover_approve');
    const dispatch = await waitFor(() => github.dispatches()[0], { timeoutMs: 15_000, what: 'the dispatch' });
    expect(dispatch).toEqual({
      workflow: 'pg-live-migrate-command.yml',
      body: { ref: 'main', inputs: { command: 'cutover', migration_id: 'shop', checksum: 'false' } },
    });
    await waitFor(() => allText().includes('dispatched the workflow with `command: cutover`'), {
      timeoutMs: 10_000,
      what: 'the audit line',
    });
  });

  it('a rejection rejects the waiting job', async () => {
    github.runs.push({
      id: 43,
      name: 'Migrate the shop database',
      displayTitle: 'Migrate shop',
      status: 'waiting',
      waitingEnvironments: [ENVIRONMENT],
    });
    const approval = await requestApproval('UALICE');
    await click('UBOB', approval, 'plm_cutover_reject');
    const review = await waitFor(
      () => github.reviews().find((r) => r.runId === 43 && r.body.state === 'rejected'),
      { timeoutMs: 15_000, what: 'the rejection' },
    );
    expect(review.body.environment_name).toBe(ENVIRONMENT);
    await waitFor(() => messageText(approval).includes('Rejected'), {
      timeoutMs: 10_000,
      what: 'the decision on the message',
    });
  });

  it('/migrate validate is dispatched with command: validate', async () => {
    const before = github.dispatches().length;
    await command('UALICE', 'validate shop --checksum');
    const dispatch = await waitFor(() => github.dispatches()[before], {
      timeoutMs: 15_000,
      what: 'the dispatch',
    });
    expect(dispatch.body).toEqual({
      ref: 'main',
      inputs: { command: 'validate', migration_id: 'shop', checksum: 'true' },
    });
  });

  it('verifies the GitHub App webhook and reports on a newly waiting job', async () => {
    github.runs.push({
      id: 44,
      name: 'Migrate the shop database',
      displayTitle: 'Migrate shop',
      status: 'waiting',
      waitingEnvironments: [ENVIRONMENT],
    });
    const body = JSON.stringify({
      action: 'requested',
      environment: ENVIRONMENT,
      event: 'workflow_dispatch',
      deployment_callback_url: `${github.url}/repos/acme/shop-infra/actions/runs/44/deployment_protection_rule`,
    });
    const post = (signature: string) =>
      fetch(`${botUrl}/github/webhook`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-github-event': 'deployment_protection_rule',
          'x-hub-signature-256': signature,
        },
        body,
      });
    expect((await post('sha256=0000')).status).toBe(401);
    const good = await post(`sha256=${createHmac('sha256', WEBHOOK_SECRET).update(body).digest('hex')}`);
    expect(good.status).toBe(202);
    const report = await waitFor(() => github.reviews().find((r) => r.runId === 44), {
      timeoutMs: 10_000,
      what: 'the status report',
    });
    expect(report.body).toMatchObject({
      environment_name: ENVIRONMENT,
      comment: expect.stringContaining('/migrate cutover shop'),
    });
    expect(report.body.state).toBeUndefined();
  });

  it('status works without a source connection, and no GitHub token reaches Slack', async () => {
    await command('UALICE', 'status');
    const response = await waitFor(() => slack.responses.find((r) => r.path === `/response/cmd-${n}`), {
      timeoutMs: 10_000,
      what: 'the status',
    });
    expect(JSON.stringify(response.body)).toContain('source not reachable from the bot');
    expect(
      findSecrets(slack, {
        'GitHub token': GITHUB_TOKEN,
        'webhook secret': WEBHOOK_SECRET,
        'target URI': targetUri,
      }),
    ).toEqual([]);
    expect(bot?.log()).not.toContain(GITHUB_TOKEN);
  });
});
