// Configuration of the Slack notifier (CLI, Action) and the bot, read from an environment object handed in
// by the entry point: one zod schema each, and errors that name the variable to set.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { MigrationError } from '../core/errors';
import { parseMaxLag } from '../core/lag';
import type { LagTarget } from '../core/slack-lag-alert';
import { DEFAULT_UPDATE_INTERVAL_MS } from '../core/slack-pacing';
import { MIGRATION_ID_PATTERN } from './options';

const configError = (message: string, hint: string) =>
  new MigrationError('CONFIG_INVALID_OPTION', message, hint);

export function parseLagTarget(text: string | undefined): LagTarget | null {
  if (text === undefined || text === '') return null;
  const target = parseMaxLag(text);
  if (!target)
    throw configError(
      `--lag-target '${text}' is neither a size nor a duration.`,
      'Pass e.g. --lag-target 16MB or --lag-target 30s.',
    );
  return target;
}

export const notifyConfig = z.object({
  token: z.string().min(1),
  channel: z.string().min(1),
  /** Base URL of the Slack Web API (tests point it at a fake); default https://slack.com/api/. */
  apiUrl: z.url().optional(),
  lagTarget: z
    .union([z.object({ bytes: z.number().min(0) }), z.object({ seconds: z.number().min(0) })])
    .nullable(),
  /** At most one edit of the live message per this long. */
  updateIntervalMs: z.number().int().min(1000).default(DEFAULT_UPDATE_INTERVAL_MS),
  runUrl: z.url().nullable(),
});
export type NotifyConfig = z.infer<typeof notifyConfig>;

/**
 * The notifier's settings from the environment (SLACK_BOT_TOKEN, SLACK_CHANNEL, SLACK_API_URL) and the
 * --lag-target flag; undefined when Slack is not configured. In GitHub Actions the run's URL is linked.
 */
export function readNotifyConfig(
  env: Record<string, string | undefined>,
  lagTargetText: string | undefined,
): NotifyConfig | undefined {
  const lagTarget = parseLagTarget(lagTargetText ?? env.PG_LIVE_MIGRATE_LAG_TARGET);
  if (!env.SLACK_BOT_TOKEN || !env.SLACK_CHANNEL) return undefined;
  const runUrl =
    env.PG_LIVE_MIGRATE_RUN_URL ??
    (env.GITHUB_SERVER_URL && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID
      ? `${env.GITHUB_SERVER_URL}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}`
      : null);
  const interval = env.PG_LIVE_MIGRATE_SLACK_UPDATE_MS;
  const parsed = notifyConfig.safeParse({
    token: env.SLACK_BOT_TOKEN,
    channel: env.SLACK_CHANNEL,
    apiUrl: env.SLACK_API_URL || undefined,
    lagTarget,
    runUrl,
    ...(interval ? { updateIntervalMs: Number(interval) } : {}),
  });
  if (!parsed.success) throw fromZod(parsed.error, NOTIFY_VARIABLES);
  return parsed.data;
}

const NOTIFY_VARIABLES: Record<string, string> = {
  apiUrl: 'SLACK_API_URL',
  updateIntervalMs: 'PG_LIVE_MIGRATE_SLACK_UPDATE_MS (milliseconds, at least 1000)',
  runUrl: 'PG_LIVE_MIGRATE_RUN_URL',
};

const connection = z.object({ source: z.string().min(1).optional(), target: z.string().min(1) });

export const botConfig = z.object({
  botToken: z.string().min(1),
  mode: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('socket'), appToken: z.string().startsWith('xapp-') }),
    z.object({
      kind: z.literal('http'),
      signingSecret: z.string().min(8),
      port: z.number().int().min(0).max(65535),
    }),
  ]),
  apiUrl: z.url().optional(),
  /** Where new migration messages go when none exists yet; default: the channel the command came from. */
  channel: z.string().min(1).optional(),
  approvers: z.array(z.string().regex(/^[UW][A-Z0-9]+$/)),
  approverGroup: z
    .string()
    .regex(/^S[A-Z0-9]+$/)
    .optional(),
  defaultMigrationId: z.string().regex(MIGRATION_ID_PATTERN),
  migrations: z.record(z.string().regex(MIGRATION_ID_PATTERN), connection),
  /** The connection every migration id uses when it is not listed in `migrations`. */
  fallback: connection.optional(),
  github: z
    .object({
      credentials: z.union([
        z.object({ kind: z.literal('token'), token: z.string().min(1) }),
        z.object({
          kind: z.literal('app'),
          appId: z.string().min(1),
          privateKey: z.string().includes('PRIVATE KEY'),
          installationId: z.number().int().positive(),
        }),
      ]),
      owner: z.string().min(1),
      repo: z.string().min(1),
      apiUrl: z.url(),
      workflow: z.string().min(1),
      ref: z.string().min(1),
      environment: z.string().min(1),
      webhookSecret: z.string().min(8).optional(),
    })
    .optional(),
  cutover: z.object({
    maxLag: z.union([z.object({ bytes: z.number() }), z.object({ seconds: z.number() })]),
    timeoutMs: z.number().int().min(1000),
    fenceRoles: z.array(z.string().min(1)),
  }),
  /** Work folder that `clean --prune` prunes when the bot runs the clean itself; none by default. */
  dir: z.string().min(1).optional(),
});
export type BotConfig = z.infer<typeof botConfig>;

const BOT_VARIABLES: Record<string, string> = {
  botToken: 'SLACK_BOT_TOKEN',
  'mode.appToken': 'SLACK_APP_TOKEN (an app-level token, xapp-…)',
  'mode.signingSecret': 'SLACK_SIGNING_SECRET',
  'mode.port': 'PORT',
  apiUrl: 'SLACK_API_URL',
  approvers: 'PG_LIVE_MIGRATE_APPROVERS (comma-separated Slack user ids like U0123ABCD)',
  approverGroup: 'PG_LIVE_MIGRATE_APPROVER_GROUP (a user group id like S0123ABCD)',
  defaultMigrationId: 'PG_LIVE_MIGRATE_MIGRATION_ID',
  migrations: 'PG_LIVE_MIGRATE_MIGRATIONS (JSON: {"<id>": {"source": "…", "target": "…"}})',
  github:
    'GITHUB_TOKEN or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY(_FILE) + GITHUB_APP_INSTALLATION_ID, and GITHUB_REPOSITORY (owner/name)',
  'github.credentials':
    'GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY(_FILE) + GITHUB_APP_INSTALLATION_ID',
  'github.apiUrl': 'GITHUB_API_URL',
  'github.webhookSecret': 'GITHUB_WEBHOOK_SECRET',
  'cutover.maxLag': 'PG_LIVE_MIGRATE_MAX_LAG',
};

export function readBotConfig(env: Record<string, string | undefined>): BotConfig {
  if (!env.SLACK_BOT_TOKEN)
    throw configError('SLACK_BOT_TOKEN is not set.', 'Set it to the bot token (xoxb-…) of the Slack app.');
  const mode =
    env.SLACK_SIGNING_SECRET && env.PORT
      ? { kind: 'http', signingSecret: env.SLACK_SIGNING_SECRET, port: Number(env.PORT) }
      : env.SLACK_APP_TOKEN
        ? { kind: 'socket', appToken: env.SLACK_APP_TOKEN }
        : undefined;
  if (!mode)
    throw configError(
      'Neither Socket Mode (SLACK_APP_TOKEN) nor HTTP mode (SLACK_SIGNING_SECRET and PORT) is configured.',
      'Set SLACK_APP_TOKEN to an app-level token with connections:write (Socket Mode, the default), or SLACK_SIGNING_SECRET and PORT to receive requests over HTTP.',
    );
  let migrations: unknown = {};
  if (env.PG_LIVE_MIGRATE_MIGRATIONS) {
    try {
      migrations = JSON.parse(env.PG_LIVE_MIGRATE_MIGRATIONS);
    } catch {
      throw configError(
        'PG_LIVE_MIGRATE_MIGRATIONS is not valid JSON.',
        'Set it to {"<migration id>": {"source": "postgresql://…", "target": "postgresql://…"}}.',
      );
    }
  }
  // An empty variable counts as unset (CI systems pass unset inputs as '').
  const target = env.TARGET || env.PGCOPYDB_TARGET_PGURI || undefined;
  const source = env.SOURCE || env.PGCOPYDB_SOURCE_PGURI || undefined;
  const [owner, repo] = (env.GITHUB_REPOSITORY ?? '').split('/');
  const maxLagText = env.PG_LIVE_MIGRATE_MAX_LAG || '500KB';
  const maxLag = parseMaxLag(maxLagText);
  if (!maxLag)
    throw configError(
      `PG_LIVE_MIGRATE_MAX_LAG '${maxLagText}' is not a size or duration.`,
      'Set e.g. 500KB or 5s.',
    );
  const timeout = parseMaxLag(env.PG_LIVE_MIGRATE_CUTOVER_TIMEOUT || '10min');
  const parsed = botConfig.safeParse({
    botToken: env.SLACK_BOT_TOKEN,
    mode,
    apiUrl: env.SLACK_API_URL || undefined,
    channel: env.SLACK_CHANNEL || undefined,
    approvers: (env.PG_LIVE_MIGRATE_APPROVERS ?? '')
      .split(',')
      .map((u) => u.trim())
      .filter(Boolean),
    approverGroup: env.PG_LIVE_MIGRATE_APPROVER_GROUP || undefined,
    defaultMigrationId: env.PG_LIVE_MIGRATE_MIGRATION_ID || 'default',
    migrations,
    fallback: target ? { target, ...(source ? { source } : {}) } : undefined,
    github:
      (env.GITHUB_TOKEN || env.GITHUB_APP_ID) && env.GITHUB_REPOSITORY
        ? {
            // A GitHub App (id, private key, installation) is preferred: its tokens are minted and renewed.
            credentials: env.GITHUB_APP_ID
              ? {
                  kind: 'app' as const,
                  appId: env.GITHUB_APP_ID,
                  privateKey: env.GITHUB_APP_PRIVATE_KEY_FILE
                    ? readFileSync(env.GITHUB_APP_PRIVATE_KEY_FILE, 'utf8')
                    : (env.GITHUB_APP_PRIVATE_KEY ?? '').replaceAll('\\n', '\n'),
                  installationId: Number(env.GITHUB_APP_INSTALLATION_ID),
                }
              : { kind: 'token' as const, token: env.GITHUB_TOKEN ?? '' },
            owner,
            repo,
            apiUrl: env.GITHUB_API_URL ?? 'https://api.github.com',
            workflow: env.PG_LIVE_MIGRATE_WORKFLOW ?? 'pg-live-migrate-command.yml',
            ref: env.PG_LIVE_MIGRATE_REF ?? 'main',
            environment: env.PG_LIVE_MIGRATE_ENVIRONMENT ?? 'pg-live-migrate-cutover',
            ...(env.GITHUB_WEBHOOK_SECRET ? { webhookSecret: env.GITHUB_WEBHOOK_SECRET } : {}),
          }
        : undefined,
    cutover: {
      maxLag,
      timeoutMs: timeout && 'seconds' in timeout ? timeout.seconds * 1000 : 10 * 60_000,
      fenceRoles: (env.PG_LIVE_MIGRATE_FENCE_ROLES ?? '')
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean),
    },
    dir: env.PG_LIVE_MIGRATE_DIR || undefined,
  });
  if (!parsed.success) throw fromZod(parsed.error, BOT_VARIABLES);
  if (!parsed.data.fallback && Object.keys(parsed.data.migrations).length === 0)
    throw new MigrationError(
      'CONFIG_MISSING_TARGET',
      'The bot knows no target database.',
      'Set TARGET (and SOURCE for validate and clean), or PG_LIVE_MIGRATE_MIGRATIONS for several migrations.',
    );
  return parsed.data;
}

/** A zod failure as a config error naming the variable (never its value: it may be a secret). */
function fromZod(error: z.ZodError, variables: Record<string, string>): MigrationError {
  const issue = error.issues[0];
  const path = (issue?.path ?? []).map(String);
  const name =
    variables[path.join('.')] ??
    variables[path.slice(0, 2).join('.')] ??
    variables[path[0] ?? ''] ??
    path.join('.');
  return configError(
    `The setting ${name} is not valid: ${issue?.message ?? 'invalid'}.`,
    `Fix ${name} in the environment of the process (see the README, Slack bot).`,
  );
}
