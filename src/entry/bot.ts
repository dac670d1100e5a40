// The Slack bot's entry (`node dist/bot.js`): reads the environment, starts the Slack transport (Socket
// Mode, or HTTP with signature verification) and the GitHub side, and stops cleanly on SIGINT/SIGTERM.
import { createGitHubRuns, isValidGitHubSignature } from '../adapters/github-app/runs';
import { type SlackApp, startSlackApp } from '../adapters/slack/bolt-app';
import { readBotConfig } from '../config/bot';
import { computeExitCode, ExitCode, isMigrationError } from '../core/errors';
import { createRedactor } from '../core/redact';
import type { BotHandlers } from '../core/slack-ports';
import { systemClock } from '../ports';
import { createBotHandlers } from '../workflows/bot';

async function main(env: NodeJS.ProcessEnv): Promise<number> {
  const redactor = createRedactor([
    env.PGPASSWORD,
    env.SLACK_BOT_TOKEN,
    env.SLACK_APP_TOKEN,
    env.SLACK_SIGNING_SECRET,
    env.GITHUB_TOKEN,
    env.GITHUB_WEBHOOK_SECRET,
    env.GITHUB_APP_PRIVATE_KEY,
  ]);
  const log = (level: 'info' | 'warn' | 'error', message: string) =>
    process.stderr.write(
      `${new Date().toISOString()} ${level === 'info' ? '' : `${level.toUpperCase()}: `}${redactor.redact(message)}\n`,
    );
  /** A setup mistake (the configuration, or a token Slack refuses): its code and fix, then the exit code. */
  const refuse = (error: unknown): number => {
    if (!isMigrationError(error)) throw error;
    log('error', `${error.code}: ${error.message}\n  hint: ${error.hint}`);
    return computeExitCode(error);
  };
  let config: ReturnType<typeof readBotConfig>;
  try {
    config = readBotConfig(env);
  } catch (error) {
    return refuse(error);
  }
  const controller = new AbortController();
  const github = config.github ? createGitHubRuns(config.github) : undefined;
  let handlers: BotHandlers | undefined;
  let app: SlackApp;
  try {
    app = await startSlackApp(
      {
        botToken: config.botToken,
        mode: config.mode,
        apiUrl: config.apiUrl,
        log,
        ...(config.github?.webhookSecret
          ? {
              githubWebhook: {
                verify: (raw: string, signature: string | undefined) =>
                  isValidGitHubSignature(config.github?.webhookSecret ?? '', raw, signature),
              },
            }
          : {}),
      },
      {
        onCommand: (input, reply) => handlers?.onCommand(input, reply) ?? Promise.resolve(),
        onButton: (input, reply) => handlers?.onButton(input, reply) ?? Promise.resolve(),
        onGitHubEvent: (event, payload) => handlers?.onGitHubEvent?.(event, payload) ?? Promise.resolve(),
      },
    );
  } catch (error) {
    return refuse(error);
  }
  handlers = createBotHandlers({
    config,
    chat: app.chat,
    github,
    clock: systemClock,
    redactor,
    env,
    stopSignal: controller.signal,
    log,
  });
  log(
    'info',
    `pg-live-migrate bot ready (${config.mode.kind === 'http' ? `HTTP on port ${app.port}` : 'Socket Mode'}; ${github ? `GitHub ${config.github?.owner}/${config.github?.repo}` : 'no GitHub: cutover requests go to the target directly'}).`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  controller.abort();
  log('info', 'Stopping the bot.');
  await app.stop().catch(() => undefined);
  return ExitCode.ok;
}

main(process.env).then(
  (code) => {
    process.exitCode = code;
    // Bolt's HTTP keep-alive sockets and Socket Mode timers may linger after stop.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (error) => {
    process.stderr.write(`error INTERNAL: ${String(error)}\n`);
    process.exitCode = ExitCode.internal;
  },
);
