// Connection strings (libpq URI or keyword/value) parsed once into libpq keywords, then turned into
// a node-postgres config or the PG* environment of a child tool (pg_dump, psql), so both behave as psql.
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { parse as parseConnectionString, toClientConfig } from 'pg-connection-string';
import { MigrationError } from '../../core/errors';
import { redactConnectionString } from '../../core/redact';

export interface ConnInfo {
  /** libpq keywords (host, port, dbname, user, password, sslmode, ...). Never log this object. */
  readonly keywords: Readonly<Record<string, string>>;
  /** The string with its password masked: safe for logs. */
  readonly display: string;
  readonly role: 'source' | 'target';
}

const URI_PATTERN = /^postgres(ql)?:\/\//i;

export function parseConnInfo(text: string, role: 'source' | 'target'): ConnInfo {
  const keywords = URI_PATTERN.test(text) ? parseUri(text, role) : parseKeywords(text, role);
  return { keywords, display: redactConnectionString(text), role };
}

function invalid(role: string, text: string, why: string): MigrationError {
  return new MigrationError(
    'CONFIG_INVALID_URI',
    `The ${role} connection string '${redactConnectionString(text)}' could not be parsed: ${why}.`,
    `Give a libpq URI (postgresql://user@host:5432/dbname?sslmode=require) or keyword string (host=... dbname=...).`,
  );
}

function parseUri(text: string, role: string): Record<string, string> {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid(role, text, 'not a valid URI (several hosts in one URI are not supported)');
  }
  const out: Record<string, string> = {};
  if (url.hostname) out.host = decodeURIComponent(url.hostname.replace(/^\[|\]$/g, ''));
  if (url.port) out.port = url.port;
  if (url.username) out.user = decodeURIComponent(url.username);
  if (url.password) out.password = decodeURIComponent(url.password);
  const db = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (db) out.dbname = db;
  for (const [key, value] of url.searchParams) out[key] = value;
  return out;
}

function parseKeywords(text: string, role: string): Record<string, string> {
  const out: Record<string, string> = {};
  const pattern = /\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^\s'\\]|\\.)+))/y;
  let rest = text.trim();
  while (rest.length > 0) {
    pattern.lastIndex = 0;
    const match = pattern.exec(rest);
    if (!match?.[1])
      throw invalid(role, text, `unexpected text near '${redactConnectionString(rest).slice(0, 20)}'`);
    out[match[1]] = (match[2] ?? match[3] ?? '').replace(/\\(.)/g, '$1');
    rest = rest.slice(pattern.lastIndex).trim();
  }
  if (Object.keys(out).length === 0) throw invalid(role, text, 'it is empty');
  return out;
}

/** node-postgres config with libpq semantics for sslmode/sslrootcert; .pgpass and PG* env apply as in psql. */
export function toPgConfig(info: ConnInfo, extra: pg.ClientConfig = {}): pg.ClientConfig {
  const k = info.keywords;
  // Rebuild a URI and let pg-connection-string apply libpq's ssl rules (it reads the cert files).
  const params = new URLSearchParams();
  for (const key of ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'application_name', 'options']) {
    const value = k[key];
    if (value !== undefined) params.set(key, value);
  }
  const host = k.host ?? k.hostaddr;
  // A socket directory is set below: the URI only carries a placeholder host (an empty one with a port is no URL).
  const uri = `postgresql://${host && !host.startsWith('/') ? encodeURIComponent(host) : 'localhost'}${k.port ? `:${k.port}` : ''}/${params.size ? `?${params}` : ''}`;
  const parsed = toClientConfig(parseConnectionString(uri, { useLibpqCompat: true }));
  const config: pg.ClientConfig = {
    ...parsed,
    host: host ?? process.env.PGHOST ?? parsed.host,
    port: k.port ? Number(k.port) : parsed.port,
    user: k.user ?? process.env.PGUSER,
    database: k.dbname ?? process.env.PGDATABASE,
    application_name: k.application_name ?? 'pg-live-migrate',
    connectionTimeoutMillis: Number(k.connect_timeout ?? 30) * 1000,
    keepAlive: true,
    ...extra,
  };
  if (k.password !== undefined) config.password = k.password;
  if (k.sslmode === undefined && typeof config.ssl === 'object' && k.sslrootcert) {
    config.ssl = { ...config.ssl, ca: readFileSync(k.sslrootcert, 'utf8') };
  }
  return config;
}

/** The PG* environment for a libpq child tool: same server, same credentials, no password on argv. */
export function toLibpqEnv(info: ConnInfo, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const map: Record<string, string> = {
    host: 'PGHOST',
    hostaddr: 'PGHOSTADDR',
    port: 'PGPORT',
    dbname: 'PGDATABASE',
    user: 'PGUSER',
    password: 'PGPASSWORD',
    passfile: 'PGPASSFILE',
    sslmode: 'PGSSLMODE',
    sslrootcert: 'PGSSLROOTCERT',
    sslcert: 'PGSSLCERT',
    sslkey: 'PGSSLKEY',
    application_name: 'PGAPPNAME',
    connect_timeout: 'PGCONNECT_TIMEOUT',
    options: 'PGOPTIONS',
  };
  const env: NodeJS.ProcessEnv = { ...base };
  for (const [keyword, value] of Object.entries(info.keywords)) {
    const name = map[keyword];
    if (name) env[name] = value;
  }
  return env;
}

/** The same connection with the database libpq actually picked (the string may have left it out). */
export function withDatabase(info: ConnInfo, database: string): ConnInfo {
  return { ...info, keywords: { ...info.keywords, dbname: database } };
}
