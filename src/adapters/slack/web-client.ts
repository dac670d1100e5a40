// The Slack Web API client as this tool uses it: the library's own retries off (they can wait half an
// hour), rate limits surfaced with their Retry-After, a timeout per call, and bounded retries of our own.
// Also the SlackChat port over it, for the bot.
import { ErrorCode, WebClient, type WebClientOptions } from '@slack/web-api';
import { computeRetry } from '../../core/slack-pacing';
import type { MessageRef, SlackChat, SlackMessage } from '../../core/slack-ports';

export interface SlackClientOptions {
  token: string;
  /** Base URL of the Web API, e.g. a fake's http://127.0.0.1:port/api/ in tests. */
  apiUrl?: string | undefined;
  timeoutMs?: number;
}

export function webClientOptions(o: Omit<SlackClientOptions, 'token'>): WebClientOptions {
  return {
    ...(o.apiUrl ? { slackApiUrl: o.apiUrl.endsWith('/') ? o.apiUrl : `${o.apiUrl}/` } : {}),
    retryConfig: { retries: 0 },
    rejectRateLimitedCalls: true,
    timeout: o.timeoutMs ?? 10_000,
    // The library logs request bodies at debug level only; keep it quiet otherwise.
    logger: {
      debug() {},
      info() {},
      warn() {},
      error() {},
      setLevel() {},
      getLevel: () => 'error' as never,
      setName() {},
    },
  };
}

/**
 * Options of the Web API client that Socket Mode opens its connections with (`apps.connections.open`, the
 * app token in the Authorization header, at start and at every reconnect): the same base URL as the bot's
 * client, and, unlike it, retries without end, at most 30 s apart, while Slack cannot be reached or answers
 * 5xx: a reconnect that gives up rejects inside the Socket Mode client, where nothing catches it, and that
 * ends the process. Slack's own answers (`invalid_auth`) are not retried.
 */
export function socketModeClientOptions(
  o: Omit<SlackClientOptions, 'token'> & { logger: NonNullable<WebClientOptions['logger']> },
): WebClientOptions {
  return {
    ...webClientOptions(o),
    retryConfig: { forever: true, factor: 2, minTimeout: 1000, maxTimeout: 30_000, randomize: true },
    rejectRateLimitedCalls: false,
    logger: o.logger,
  };
}

export function createSlackClient(o: SlackClientOptions): WebClient {
  return new WebClient(o.token, webClientOptions(o));
}

/** What a failed call means for a retry: Slack's Retry-After, or an error no retry can fix. */
export function classifySlackError(error: unknown): {
  code: string;
  retryAfterSeconds?: number;
  permanent: boolean;
} {
  const e = error as { code?: string; retryAfter?: number; data?: { error?: string }; statusCode?: number };
  if (e?.code === ErrorCode.RateLimitedError)
    return { code: 'ratelimited', retryAfterSeconds: e.retryAfter ?? 1, permanent: false };
  if (e?.code === ErrorCode.PlatformError) {
    const slackError = e.data?.error ?? 'unknown';
    const transient = [
      'internal_error',
      'fatal_error',
      'service_unavailable',
      'request_timeout',
      'ratelimited',
    ];
    return { code: slackError, permanent: !transient.includes(slackError) };
  }
  if (e?.code === ErrorCode.HTTPError) return { code: `http_${e.statusCode ?? '?'}`, permanent: false };
  return { code: error instanceof Error ? error.message.slice(0, 120) : 'unknown', permanent: false };
}

/** Runs a call with bounded retries; throws the last error once the bound is reached. */
export async function callSlack<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      const retry = computeRetry(attempt, classifySlackError(error));
      if (retry === 'drop' || signal?.aborted) throw error;
      await new Promise((r) => setTimeout(r, retry.waitMs));
    }
  }
}

export function createSlackChat(client: WebClient): SlackChat {
  return {
    async post(input) {
      const result = await callSlack(() =>
        client.chat.postMessage({
          channel: input.channel,
          text: input.text,
          ...(input.blocks ? { blocks: input.blocks } : {}),
          ...(input.threadTs ? { thread_ts: input.threadTs } : {}),
          ...(input.broadcast ? { reply_broadcast: true } : {}),
          unfurl_links: false,
        } as Parameters<WebClient['chat']['postMessage']>[0]),
      );
      return { channel: String(result.channel), ts: String(result.ts) } satisfies MessageRef;
    },
    async update(ref, message: SlackMessage) {
      await callSlack(() =>
        client.chat.update({
          channel: ref.channel,
          ts: ref.ts,
          text: message.text,
          blocks: message.blocks ?? [],
        } as Parameters<WebClient['chat']['update']>[0]),
      );
    },
    async groupMembers(groupId) {
      const result = await callSlack(() => client.usergroups.users.list({ usergroup: groupId }));
      return (result.users ?? []) as string[];
    },
  };
}
