// Opening, scoping and closing node-postgres clients, and turning driver errors into MigrationErrors
// that say which server, what happened and what to do.
import pg from 'pg';
import { MigrationError } from '../../core/errors';
import { type ConnInfo, toPgConfig } from './connection';

/** Session settings that make text output identical on both sides (validation compares text forms). */
export const CANONICAL_SESSION = {
  TimeZone: 'UTC',
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  extra_float_digits: '1',
  bytea_output: 'hex',
  // The text form of money follows lc_monetary.
  lc_monetary: 'C',
  client_encoding: 'UTF8',
} as const;

export async function openClient(info: ConnInfo, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client(toPgConfig(info, extra));
  // An idle client whose server goes away emits 'error'; without a listener Node would crash.
  client.on('error', () => undefined);
  try {
    await client.connect();
    // node-postgres parses dates and timestamps in ISO style only: under a server or database default such
    // as DateStyle = 'German' every timestamptz read back (copy_finished_at …) would become null.
    if (!('replication' in extra)) await client.query("SET DateStyle = 'ISO, MDY'");
  } catch (error) {
    await client.end().catch(() => undefined);
    throw translatePgError(error, info);
  }
  return client;
}

export async function withClient<T>(
  info: ConnInfo,
  fn: (client: pg.Client) => Promise<T>,
  extra: pg.ClientConfig = {},
): Promise<T> {
  const client = await openClient(info, extra);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function setCanonicalSession(client: pg.Client): Promise<void> {
  const sets = Object.entries(CANONICAL_SESSION).map(([k, v]) => `SET ${k} = '${v}'`);
  await client.query(sets.join('; '));
}

export function sqlState(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

/** Maps connection-level failures to stable codes; anything else is returned unchanged. */
export function translatePgError(error: unknown, info: ConnInfo): unknown {
  if (error instanceof MigrationError) return error;
  const code = sqlState(error);
  const message = error instanceof Error ? error.message : String(error);
  const where = `${info.role} (${info.display})`;
  const host = info.keywords.host ?? 'localhost';
  if (code === '28P01' || code === '28000' || /password authentication failed|no password/i.test(message)) {
    return new MigrationError(
      'AUTHENTICATION_FAILED',
      `The ${where} refused the login: ${message}.`,
      `Check the user and password of the ${info.role} connection string (or PGPASSWORD / ~/.pgpass), and pg_hba.conf on the server.`,
      { cause: error },
    );
  }
  if (code === '3D000') {
    return new MigrationError(
      'DATABASE_NOT_FOUND',
      `The ${where} has no such database: ${message}.`,
      `Fix the database name in the ${info.role} connection string, or create the database first.`,
      { cause: error },
    );
  }
  if (
    code === 'ECONNREFUSED' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN' ||
    code === 'ETIMEDOUT' ||
    code === 'EHOSTUNREACH' ||
    /timeout expired|Connection terminated unexpectedly|connect E/i.test(message)
  ) {
    return new MigrationError(
      'CONNECTION_FAILED',
      `Could not reach the ${where}: ${message}.`,
      `Check that ${host}:${info.keywords.port ?? 5432} is reachable from this machine (firewall, security group, listen_addresses) and the server is up.`,
      { cause: error },
    );
  }
  if (code === '42501') {
    return new MigrationError(
      'PERMISSION_DENIED',
      `The ${info.role} user lacks a privilege: ${message}.`,
      `Grant the privilege named above to the ${info.role} user (run preflight to see every missing privilege at once).`,
      { cause: error },
    );
  }
  return error;
}
