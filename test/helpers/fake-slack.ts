// A fake Slack on 127.0.0.1 speaking the real Web API protocol (form-encoded POST /api/<method>, JSON
// answers, 429 with Retry-After), with the response_url endpoint of slash commands and buttons; slash
// commands and button clicks sent to an HTTP-mode app signed the way Slack signs them, or pushed to a
// Socket Mode app over the WebSocket that `apps.connections.open` hands out (hello, envelopes, acks,
// disconnect), with the same payloads.
import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';

export interface SlackCall {
  method: string;
  args: Record<string, unknown>;
  atMs: number;
  /** The raw request body: what a secret scan must look at. */
  body: string;
  /** The Authorization header (authentication, not content). */
  authorization: string | undefined;
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
  socket: FakeSocketMode;
  close(): Promise<void>;
}

/** An app's acknowledgement of an envelope: `{envelope_id, payload?}` on the socket. */
export interface SocketAck {
  envelopeId: string;
  payload: Record<string, unknown> | undefined;
  /** From the envelope sent to its ack received (Slack wants it within 3 s). */
  ms: number;
}

export type DisconnectReason = 'refresh_requested' | 'warning' | 'too_many_websockets';

/**
 * Socket Mode: `apps.connections.open` with the app token returns a single-use `ws://` URL; the socket
 * greets the app with `hello`; the test pushes envelopes to the newest connection and awaits their acks.
 */
export interface FakeSocketMode {
  /** WebSocket connections accepted so far (each was sent `hello`). */
  connections(): number;
  /** Connections open now. */
  open(): number;
  /** Every message an app sent on a socket, raw: what a secret scan must look at. */
  received: string[];
  acks: SocketAck[];
  /** Sends an envelope to the newest open connection; returns its envelope id. */
  send(type: 'slash_commands' | 'interactive', payload: unknown, acceptsResponsePayload: boolean): string;
  /** The ack of an envelope, as soon as it arrives; rejects after `timeoutMs` (default 10 s). */
  ack(envelopeId: string, timeoutMs?: number): Promise<SocketAck>;
  /** A `/migrate` slash command as Slack pushes it; resolves with its ack. */
  command(input: SlashCommandInput): Promise<SocketAck>;
  /** A click on a button of a message as Slack pushes it (block_actions); resolves with its ack. */
  click(input: ButtonClickInput): Promise<SocketAck>;
  /** What Slack sends before it recycles a connection: the app is to open a new one. */
  disconnect(reason?: DisconnectReason): void;
  /** Drops every connection without a close frame (a network failure). */
  drop(): void;
}

export const FAKE_APP_TOKEN = 'xapp-1-A0FAKE-1-fake-app-token-5678';
const APP_ID = 'A0FAKE';

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
  const socket = createSocketMode();

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
    const authorization = req.headers.authorization;
    calls.push({ method, args, atMs: Date.now(), body, authorization });
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
    if (method === 'apps.connections.open') {
      // Only an app-level token, and only in the Authorization header (Slack refuses it as an argument).
      const answer = socket.openConnection(authorization, 'token' in args, url);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      return;
    }
    if (authorization !== `Bearer ${FAKE_BOT_TOKEN}` && !('token' in args)) {
      // As Slack: no token at all is not_authed, a token it does not know is invalid_auth.
      const error = authorization ? 'invalid_auth' : 'not_authed';
      res.writeHead(200, { 'content-type': 'application/json' }).end(`{"ok":false,"error":"${error}"}`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(api(method, args)));
  });
  server.on('upgrade', socket.upgrade);
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
    socket: socket.api,
    close: async () => {
      await socket.close();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

/**
 * Socket Mode as Slack runs it (https://api.slack.com/apis/connections/socket): a URL per `apps.connections.open`
 * with a ticket good for one connection, `hello` on connect, envelopes `{envelope_id, type, payload,
 * accepts_response_payload}`, acks `{envelope_id, payload?}`, and `disconnect` before a refresh.
 */
function createSocketMode() {
  const wss = new WebSocketServer({ noServer: true });
  const tickets = new Set<string>();
  const sockets: WebSocket[] = [];
  const received: string[] = [];
  const acks: SocketAck[] = [];
  const sentAt = new Map<string, number>();
  const waiters = new Map<string, (ack: SocketAck) => void>();
  let accepted = 0;
  const newest = () => sockets.filter((s) => s.readyState === s.OPEN).at(-1);

  const openConnection = (authorization: string | undefined, tokenArgument: boolean, httpUrl: string) => {
    if (tokenArgument) return { ok: false, error: 'invalid_arguments' };
    if (!authorization) return { ok: false, error: 'not_authed' };
    if (!authorization.startsWith('Bearer xapp-')) return { ok: false, error: 'not_allowed_token_type' };
    if (authorization !== `Bearer ${FAKE_APP_TOKEN}`) return { ok: false, error: 'invalid_auth' };
    const ticket = randomUUID();
    tickets.add(ticket);
    return { ok: true, url: `${httpUrl.replace(/^http/, 'ws')}/link/?ticket=${ticket}&app_id=${APP_ID}` };
  };

  const upgrade = (req: IncomingMessage, raw: Duplex, head: Buffer) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const ticket = u.searchParams.get('ticket') ?? '';
    if (u.pathname !== '/link/' || !tickets.delete(ticket)) {
      raw.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, raw, head, (ws) => {
      accepted += 1;
      sockets.push(ws);
      ws.on('message', (data) => {
        const text = data.toString();
        received.push(text);
        let message: { envelope_id?: string; payload?: Record<string, unknown> };
        try {
          message = JSON.parse(text);
        } catch {
          return;
        }
        if (!message.envelope_id) return;
        const ack: SocketAck = {
          envelopeId: message.envelope_id,
          payload: message.payload,
          ms: Date.now() - (sentAt.get(message.envelope_id) ?? Number.NaN),
        };
        acks.push(ack);
        waiters.get(ack.envelopeId)?.(ack);
      });
      ws.send(
        JSON.stringify({
          type: 'hello',
          num_connections: sockets.filter((s) => s.readyState === s.OPEN).length,
          debug_info: {
            host: `applink-fake-${accepted}`,
            build_number: 1,
            approximate_connection_time: 18060,
          },
          connection_info: { app_id: APP_ID },
        }),
      );
    });
  };

  const send: FakeSocketMode['send'] = (type, payload, acceptsResponsePayload) => {
    const ws = newest();
    if (!ws) throw new Error(`no Socket Mode connection is open (${accepted} accepted so far)`);
    const envelopeId = randomUUID();
    sentAt.set(envelopeId, Date.now());
    ws.send(
      JSON.stringify({
        envelope_id: envelopeId,
        payload,
        type,
        accepts_response_payload: acceptsResponsePayload,
      }),
    );
    return envelopeId;
  };
  const ack: FakeSocketMode['ack'] = (envelopeId, timeoutMs = 10_000) => {
    const done = acks.find((a) => a.envelopeId === envelopeId);
    if (done) return Promise.resolve(done);
    return new Promise<SocketAck>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(envelopeId);
        reject(new Error(`no ack of envelope ${envelopeId} within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.set(envelopeId, (a) => {
        clearTimeout(timer);
        waiters.delete(envelopeId);
        resolve(a);
      });
    });
  };

  const api: FakeSocketMode = {
    connections: () => accepted,
    open: () => sockets.filter((s) => s.readyState === s.OPEN).length,
    received,
    acks,
    send,
    ack,
    // Slack asks for a response payload in a slash command's ack, not in a block_actions click's.
    command: (input) => ack(send('slash_commands', slashCommandPayload(input), true)),
    click: (input) => ack(send('interactive', blockActionsPayload(input), false)),
    disconnect: (reason = 'refresh_requested') => {
      newest()?.send(
        JSON.stringify({ type: 'disconnect', reason, debug_info: { host: `applink-fake-${accepted}` } }),
      );
    },
    drop: () => {
      for (const ws of sockets) ws.terminate();
    },
  };
  return {
    api,
    openConnection,
    upgrade,
    close: async () => {
      for (const ws of sockets) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
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

export interface SlashCommandInput {
  userId: string;
  text: string;
  channelId: string;
  responseUrl: string;
}

/** The fields of a `/migrate` slash command: an HTTP request's form, a Socket Mode envelope's payload. */
export function slashCommandPayload(input: SlashCommandInput): Record<string, string> {
  return {
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
  };
}

/** A `/migrate` slash command as Slack sends it to an HTTP-mode app. */
export function sendSlashCommand(botUrl: string, input: SlashCommandInput, o: SignedPostOptions) {
  const body = new URLSearchParams(slashCommandPayload(input)).toString();
  return postSigned(`${botUrl}/slack/events`, body, o);
}

export interface ButtonClickInput {
  userId: string;
  message: FakeMessage;
  actionId: string;
  responseUrl: string;
}

/** The block_actions payload of a click on a button of `message` (both transports carry it as is). */
export function blockActionsPayload(input: ButtonClickInput): Record<string, unknown> {
  const button = input.message.blocks
    .flatMap(
      (b) => ((b as { elements?: unknown[] }).elements ?? []) as { action_id?: string; value?: string }[],
    )
    .find((e) => e.action_id === input.actionId);
  if (!button) throw new Error(`no button ${input.actionId} on message ${input.message.ts}`);
  return {
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
}

/** A click on a button of `message` as Slack sends it to an HTTP-mode app (block_actions). */
export function sendButtonClick(botUrl: string, input: ButtonClickInput, o: SignedPostOptions) {
  const body = new URLSearchParams({ payload: JSON.stringify(blockActionsPayload(input)) }).toString();
  return postSigned(`${botUrl}/slack/events`, body, o);
}

/**
 * Everything an app sent to the fake as content: Web API arguments (less `token`, which Bolt passes as an
 * argument: authentication, like the Authorization header), response_url bodies and socket messages.
 */
export function receivedContent(slack: FakeSlack): string[] {
  return [
    ...slack.calls.map((c) => JSON.stringify({ ...c.args, token: undefined })),
    ...slack.responses.map((r) => JSON.stringify(r.body)),
    ...slack.socket.received,
  ];
}

/** Which of the named secrets (raw or URI-encoded) appear in what the fake received; [] when none. */
export function findSecrets(slack: FakeSlack, secrets: Record<string, string>): string[] {
  const found: string[] = [];
  for (const [i, content] of receivedContent(slack).entries())
    for (const [name, secret] of Object.entries(secrets))
      if (content.includes(secret) || content.includes(encodeURIComponent(secret)))
        found.push(`${name} in message ${i}: ${content.slice(0, 200)}`);
  return found;
}
