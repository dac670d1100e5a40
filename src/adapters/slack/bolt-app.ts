// The bot's Slack transport (Bolt): Socket Mode by default (reconnecting by itself whenever Slack closes the
// connection), HTTP when a signing secret and a port are given (Bolt verifies every request's signature and
// refuses stale ones). Each slash command and button
// click is acknowledged first, within Slack's 3 s, and handled after. Optionally serves the GitHub App's
// webhook on the same HTTP server. Everything our handlers need goes through the ports in slack-ports.ts.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { App, SocketModeReceiver } from '@slack/bolt';
import { MigrationError } from '../../core/errors';
import type { BotHandlers, Reply, SlackChat } from '../../core/slack-ports';
import { createSlackChat, socketModeClientOptions, webClientOptions } from './web-client';

export interface SlackAppOptions {
  botToken: string;
  mode: { kind: 'socket'; appToken: string } | { kind: 'http'; signingSecret: string; port: number };
  apiUrl?: string | undefined;
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Serve GitHub App webhooks at /github/webhook (HTTP mode): verify, then hand over. */
  githubWebhook?: { verify(rawBody: string, signature: string | undefined): boolean };
}

export interface SlackApp {
  chat: SlackChat;
  /** The HTTP port listened on (HTTP mode). */
  port: number | undefined;
  stop(): Promise<void>;
}

type Respond = (message: Record<string, unknown>) => Promise<unknown>;

function replyVia(respond: Respond | undefined): Reply {
  return {
    async ephemeral(message) {
      if (!respond) return;
      await respond({
        response_type: 'ephemeral',
        text: message.text,
        ...(message.blocks ? { blocks: message.blocks } : {}),
        ...(message.replaceOriginal ? { replace_original: true } : {}),
      });
    },
  };
}

export async function startSlackApp(o: SlackAppOptions, handlers: BotHandlers): Promise<SlackApp> {
  const logger = {
    debug: () => undefined,
    info: (...m: unknown[]) => o.log('info', m.map(String).join(' ')),
    warn: (...m: unknown[]) => o.log('warn', m.map(String).join(' ')),
    error: (...m: unknown[]) => o.log('error', m.map(String).join(' ')),
    setLevel: () => undefined,
    getLevel: () => 'info' as never,
    setName: () => undefined,
  };
  const customRoutes =
    o.githubWebhook && o.mode.kind === 'http'
      ? [
          {
            path: '/github/webhook',
            method: ['POST'],
            handler: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
              const chunks: Buffer[] = [];
              req.on('data', (c: Buffer) => chunks.push(c));
              req.on('end', () => {
                const raw = Buffer.concat(chunks).toString('utf8');
                const signature = req.headers['x-hub-signature-256'];
                if (!o.githubWebhook?.verify(raw, typeof signature === 'string' ? signature : undefined)) {
                  res.writeHead(401).end();
                  return;
                }
                res.writeHead(202).end();
                const event = String(req.headers['x-github-event'] ?? '');
                let payload: unknown;
                try {
                  payload = JSON.parse(raw);
                } catch {
                  return;
                }
                void handlers
                  .onGitHubEvent?.(event, payload)
                  .catch((error: Error) => o.log('error', `GitHub webhook: ${error.message}`));
              });
            },
          },
        ]
      : undefined;
  // The receiver's SocketModeClient opens each connection with a Web API client of its own, built from
  // installerOptions.clientOptions: the same base URL as the bot's client (SLACK_API_URL), other retries.
  const receiver =
    o.mode.kind === 'socket'
      ? new SocketModeReceiver({
          appToken: o.mode.appToken,
          logger,
          installerOptions: { clientOptions: socketModeClientOptions({ apiUrl: o.apiUrl, logger }) },
        })
      : undefined;
  if (receiver) {
    // Slack refreshes connections every few hours, so a reconnect is routine; one that takes long shows as
    // the gap between these two lines.
    let opened = false;
    receiver.client.on('connected', () => {
      if (opened) o.log('info', 'Slack: Socket Mode connection open again.');
      opened = true;
    });
    receiver.client.on('reconnecting', () =>
      o.log('info', 'Slack: Socket Mode connection closed; reconnecting.'),
    );
  }
  const app = new App({
    token: o.botToken,
    logger,
    clientOptions: webClientOptions({ apiUrl: o.apiUrl }),
    ...(o.mode.kind === 'http' ? { signingSecret: o.mode.signingSecret } : { socketMode: true, receiver }),
    ...(customRoutes ? { customRoutes } : {}),
  });

  app.command('/migrate', async ({ command, ack, respond }) => {
    await ack();
    await handlers
      .onCommand(
        { userId: command.user_id, channelId: command.channel_id, text: command.text ?? '' },
        replyVia(respond as Respond),
      )
      .catch((error: Error) => o.log('error', `/migrate ${command.text}: ${error.stack ?? error.message}`));
  });

  app.action(/^plm_/, async ({ body, action, ack, respond }) => {
    await ack();
    const b = body as {
      user?: { id?: string };
      channel?: { id?: string };
      container?: { channel_id?: string; message_ts?: string };
      message?: { ts?: string };
    };
    const a = action as { action_id?: string; value?: string };
    await handlers
      .onButton(
        {
          userId: b.user?.id ?? '',
          actionId: a.action_id ?? '',
          value: a.value ?? '',
          channelId: b.channel?.id ?? b.container?.channel_id ?? '',
          messageTs: b.message?.ts ?? b.container?.message_ts ?? '',
        },
        replyVia(respond as Respond | undefined),
      )
      .catch((error: Error) => o.log('error', `button ${a.action_id}: ${error.stack ?? error.message}`));
  });

  app.error(async (error) => o.log('error', `Slack: ${error.message}`));

  // A wrong bot token would otherwise surface only at the first command: check it before saying ready.
  await app.client.auth.test().catch((error: unknown) => {
    const slackError = (error as { data?: { error?: unknown } }).data?.error;
    if (typeof slackError !== 'string') {
      o.log('warn', `Could not check SLACK_BOT_TOKEN with Slack (${(error as Error).message}); going on.`);
      return;
    }
    throw new MigrationError(
      'CONFIG_INVALID_OPTION',
      `Slack refused SLACK_BOT_TOKEN: ${slackError}.`,
      "Set SLACK_BOT_TOKEN to the app's bot token (xoxb-…) from its OAuth & Permissions page, installed in this workspace.",
    );
  });

  let port: number | undefined;
  if (o.mode.kind === 'http') {
    const server = (await app.start(o.mode.port)) as Server;
    port = (server.address() as AddressInfo).port;
  } else {
    await app.start().catch((error: unknown) => {
      // Slack's answer to apps.connections.open (invalid_auth, not_allowed_token_type, …): a setup mistake.
      const slackError = (error as { data?: { error?: unknown } }).data?.error;
      if (typeof slackError !== 'string') throw error;
      throw new MigrationError(
        'CONFIG_INVALID_OPTION',
        `Slack refused to open a Socket Mode connection with SLACK_APP_TOKEN: ${slackError}.`,
        "Set SLACK_APP_TOKEN to an app-level token (xapp-…) of this Slack app with the connections:write scope, and turn Socket Mode on in the app's settings (or use HTTP mode: SLACK_SIGNING_SECRET and PORT).",
      );
    });
  }
  return {
    chat: createSlackChat(app.client),
    port,
    stop: async () => {
      await app.stop();
    },
  };
}
