// A fake Slack on 127.0.0.1 speaking the real Web API protocol (form-encoded POST /api/<method>, JSON
// answers, 429 with Retry-After), with the response_url endpoint of slash commands and buttons, and a
// client that sends slash commands and button clicks signed the way Slack signs them.
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SlackCall {
  method: string;
  args: Record<string, unknown>;
  atMs: number;
  /** The raw request body: what a secret scan must look at. */
  body: string;
}

export interface FakeMessage {
  channel: string;
  ts: string;
  text: string;
  blocks: unknown[];
  threadTs: string | undefined;
  edits: number;
}

export interface FakeSlack {
  apiUrl: string;
  url: string;
  calls: SlackCall[];
  /** Bodies posted to response_url, by request. */
  responses: { path: string; body: Record<string, unknown>; atMs: number }[];
  messages: Map<string, FakeMessage>;
  /** The top-level messages of a channel. */
  roots(channel?: string): FakeMessage[];
  thread(ts: string): FakeMessage[];
  /** The next `count` calls of `method` answer 429 with this Retry-After. */
  rateLimit(method: string, count: number, retryAfterSeconds: number): void;
  /** Every call answers 503 while down. */
  setDown(down: boolean): void;
  setGroup(id: string, users: string[]): void;
  responseUrl(name: string): string;
  close(): Promise<void>;
}

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });

export async function startFakeSlack(): Promise<FakeSlack> {
  const calls: SlackCall[] = [];
  const responses: FakeSlack['responses'] = [];
  const messages = new Map<string, FakeMessage>();
  const limits = new Map<string, { count: number; retryAfter: number }>();
  const groups = new Map<string, string[]>();
  let down = false;
  let seq = 0;
  const nextTs = () => `1700000000.${String(++seq).padStart(6, '0')}`;

  const api = (method: string, args: Record<string, unknown>): Record<string, unknown> => {
    switch (method) {
      case 'auth.test':
        return {
          ok: true,
          url: 'https://fake.slack/',
          team: 'Fake',
          user: 'plm',
          team_id: 'T0FAKE',
          user_id: 'UBOT',
          bot_id: 'BBOT',
        };
      case 'chat.postMessage': {
        const ts = nextTs();
        const message: FakeMessage = {
          channel: String(args.channel),
          ts,
          text: String(args.text ?? ''),
          blocks: parseBlocks(args.blocks),
          threadTs: args.thread_ts ? String(args.thread_ts) : undefined,
          edits: 0,
        };
        messages.set(ts, message);
        return { ok: true, channel: message.channel, ts, message: { text: message.text, ts } };
      }
      case 'chat.update': {
        const message = messages.get(String(args.ts));
        if (!message || message.channel !== String(args.channel))
          return { ok: false, error: 'message_not_found' };
        message.text = String(args.text ?? '');
        message.blocks = parseBlocks(args.blocks);
        message.edits += 1;
        return { ok: true, channel: message.channel, ts: message.ts, text: message.text };
      }
      case 'usergroups.users.list':
        return { ok: true, users: groups.get(String(args.usergroup)) ?? [] };
      default:
        return { ok: false, error: 'unknown_method' };
    }
  };

  const server: Server = createServer(async (req, res) => {
    const body = await readBody(req);
    const path = req.url ?? '/';
    if (path.startsWith('/response/')) {
      responses.push({ path, body: JSON.parse(body || '{}'), atMs: Date.now() });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      return;
    }
    const method = path.replace(/^\/api\//, '').split('?')[0] ?? '';
    const args = (req.headers['content-type'] ?? '').includes('json')
      ? (JSON.parse(body || '{}') as Record<string, unknown>)
      : Object.fromEntries(new URLSearchParams(body));
    calls.push({ method, args, atMs: Date.now(), body });
    if (down) {
      res.writeHead(503).end('service unavailable');
      return;
    }
    const limit = limits.get(method);
    if (limit && limit.count > 0) {
      limit.count -= 1;
      res.writeHead(429, { 'retry-after': String(limit.retryAfter), 'content-type': 'application/json' });
      res.end('{"ok":false,"error":"ratelimited"}');
      return;
    }
    if (req.headers.authorization !== 'Bearer xoxb-fake-bot-token-1234' && !('token' in args)) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":false,"error":"not_authed"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(api(method, args)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    apiUrl: `${url}/api/`,
    url,
    calls,
    responses,
    messages,
    roots: (channel) =>
      [...messages.values()].filter((m) => !m.threadTs && (!channel || m.channel === channel)),
    thread: (ts) => [...messages.values()].filter((m) => m.threadTs === ts),
    rateLimit: (method, count, retryAfterSeconds) =>
      limits.set(method, { count, retryAfter: retryAfterSeconds }),
    setDown: (value) => {
      down = value;
    },
    setGroup: (id, users) => groups.set(id, users),
    responseUrl: (name) => `${url}/response/${name}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const FAKE_BOT_TOKEN = 'xoxb-fake-bot-token-1234';

function parseBlocks(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  if (typeof value !== 'string' || value === '') return [];
  try {
    return JSON.parse(value) as unknown[];
  } catch {
    return [];
  }
}

/** All text of a message (text and blocks), for assertions. */
export function messageText(m: Pick<FakeMessage, 'text' | 'blocks'>): string {
  return `${m.text}\n${JSON.stringify(m.blocks)}`;
}

export function hasButtons(m: Pick<FakeMessage, 'blocks'>): boolean {
  return m.blocks.some((b) => (b as { type?: string }).type === 'actions');
}

/** Signs a request body the way Slack does (v0 HMAC-SHA256 of "v0:<timestamp>:<body>"). */
export function signSlackRequest(secret: string, body: string, timestampSec: number): Record<string, string> {
  const signature = `v0=${createHmac('sha256', secret).update(`v0:${timestampSec}:${body}`).digest('hex')}`;
  return { 'x-slack-request-timestamp': String(timestampSec), 'x-slack-signature': signature };
}

export interface SignedPostOptions {
  secret: string;
  /** Seconds since the epoch; default now. */
  timestampSec?: number;
  /** Signs with this secret instead (a forgery). */
  forgeWith?: string;
}

async function postSigned(
  url: string,
  body: string,
  o: SignedPostOptions,
): Promise<{ status: number; ms: number; text: string }> {
  const started = Date.now();
  const headers = signSlackRequest(
    o.forgeWith ?? o.secret,
    body,
    o.timestampSec ?? Math.floor(Date.now() / 1000),
  );
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body,
  });
  return { status: response.status, ms: Date.now() - started, text: await response.text() };
}

/** A `/migrate` slash command as Slack sends it. */
export function sendSlashCommand(
  botUrl: string,
  input: { userId: string; text: string; channelId: string; responseUrl: string },
  o: SignedPostOptions,
) {
  const body = new URLSearchParams({
    token: 'deprecated-verification-token',
    team_id: 'T0FAKE',
    team_domain: 'fake',
    channel_id: input.channelId,
    channel_name: 'migrations',
    user_id: input.userId,
    user_name: input.userId.toLowerCase(),
    command: '/migrate',
    text: input.text,
    api_app_id: 'A0FAKE',
    is_enterprise_install: 'false',
    response_url: input.responseUrl,
    trigger_id: `${Date.now()}.trigger`,
  }).toString();
  return postSigned(`${botUrl}/slack/events`, body, o);
}

/** A click on a button of `message` as Slack sends it (block_actions). */
export function sendButtonClick(
  botUrl: string,
  input: { userId: string; message: FakeMessage; actionId: string; responseUrl: string },
  o: SignedPostOptions,
) {
  const button = input.message.blocks
    .flatMap(
      (b) => ((b as { elements?: unknown[] }).elements ?? []) as { action_id?: string; value?: string }[],
    )
    .find((e) => e.action_id === input.actionId);
  if (!button) throw new Error(`no button ${input.actionId} on message ${input.message.ts}`);
  const payload = {
    type: 'block_actions',
    team: { id: 'T0FAKE', domain: 'fake' },
    user: { id: input.userId, username: input.userId.toLowerCase(), team_id: 'T0FAKE' },
    api_app_id: 'A0FAKE',
    token: 'deprecated-verification-token',
    container: {
      type: 'message',
      message_ts: input.message.ts,
      channel_id: input.message.channel,
      is_ephemeral: false,
    },
    trigger_id: `${Date.now()}.trigger`,
    channel: { id: input.message.channel, name: 'migrations' },
    message: {
      type: 'message',
      ts: input.message.ts,
      text: input.message.text,
      blocks: input.message.blocks,
    },
    response_url: input.responseUrl,
    actions: [
      {
        type: 'button',
        action_id: input.actionId,
        block_id: 'b',
        text: { type: 'plain_text', text: 'x' },
        value: button.value,
        action_ts: `${Date.now() / 1000}`,
      },
    ],
  };
  const body = new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
  return postSigned(`${botUrl}/slack/events`, body, o);
}
