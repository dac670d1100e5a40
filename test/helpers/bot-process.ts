// The Slack bot as a user runs it (`pg-live-migrate bot`, the built CLI starting dist/bot.js) against the
// fake Slack, with only the settings a test gives: the caller's own SLACK_* and GITHUB_* are cleared.
import { type CliProcess, spawnCli, waitFor } from './clusters';
import { FAKE_BOT_TOKEN, type FakeSlack } from './fake-slack';

export interface BotProcess {
  cli: CliProcess;
  /** What the bot has logged so far (stderr). */
  log(): string;
  /** The HTTP port in HTTP mode. */
  port: number | undefined;
  /** SIGTERM, then waits for the process to end. */
  stop(): Promise<void>;
}

/** Variables the bot reads that a test must set itself if it wants them. */
const CLEARED = [
  'SLACK_APP_TOKEN',
  'SLACK_SIGNING_SECRET',
  'PORT',
  'SLACK_CHANNEL',
  'SOURCE',
  'TARGET',
  'PGCOPYDB_SOURCE_PGURI',
  'PGCOPYDB_TARGET_PGURI',
  'PG_LIVE_MIGRATE_MIGRATIONS',
  'PG_LIVE_MIGRATE_APPROVERS',
  'PG_LIVE_MIGRATE_APPROVER_GROUP',
  'GITHUB_TOKEN',
  'GITHUB_REPOSITORY',
  'GITHUB_APP_ID',
  'GITHUB_APP_PRIVATE_KEY',
  'GITHUB_APP_PRIVATE_KEY_FILE',
  'GITHUB_APP_INSTALLATION_ID',
  'GITHUB_WEBHOOK_SECRET',
];

/** The bot's environment: the fake's Web API URL and bot token, and `env`. */
export function botEnv(slack: FakeSlack, env: Record<string, string>): Record<string, string> {
  return {
    ...Object.fromEntries(CLEARED.map((name) => [name, ''])),
    SLACK_BOT_TOKEN: FAKE_BOT_TOKEN,
    SLACK_API_URL: slack.apiUrl,
    ...env,
  };
}

/** Starts the bot; resolves once it says it is ready. */
export async function startBot(slack: FakeSlack, env: Record<string, string>): Promise<BotProcess> {
  const cli = spawnCli(['bot'], { env: botEnv(slack, env) });
  const log = () => cli.output().stderr;
  const ready = await Promise.race([
    waitFor(() => /pg-live-migrate bot ready \((?:HTTP on port (\d+)|Socket Mode)/.exec(log()) ?? undefined, {
      timeoutMs: 20_000,
      what: 'the bot to be ready',
    }),
    cli.result.then((r) => {
      throw new Error(`the bot exited (${r.code ?? r.signal}) before it was ready:\n${r.stderr}`);
    }),
  ]).catch(async (error: Error) => {
    // SIGTERM, which the CLI passes on to dist/bot.js (a SIGKILL would leave that running).
    cli.child.kill('SIGTERM');
    await cli.result;
    throw new Error(`${error.message}\nbot log:\n${log()}`);
  });
  return {
    cli,
    log,
    port: ready[1] ? Number(ready[1]) : undefined,
    stop: async () => {
      if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGTERM');
      await cli.result;
    },
  };
}
