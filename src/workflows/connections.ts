// Resolves the source and target connection strings of a command and checks that both are usable.

import { type ConnInfo, parseConnInfo } from '../adapters/postgres/connection';
import { MigrationError } from '../core/errors';
import type { Redactor } from '../core/redact';

export interface Endpoints {
  source: ConnInfo;
  target: ConnInfo;
}

export function resolveEndpoint(
  text: string | undefined,
  role: 'source' | 'target',
  redactor: Redactor,
): ConnInfo {
  if (!text) {
    const upper = role.toUpperCase();
    throw new MigrationError(
      role === 'source' ? 'CONFIG_MISSING_SOURCE' : 'CONFIG_MISSING_TARGET',
      `No ${role} connection string was given.`,
      `Pass --${role} postgresql://user@host:5432/dbname, or set ${upper} (or PGCOPYDB_${upper}_PGURI).`,
    );
  }
  const info = parseConnInfo(text, role);
  redactor.add(info.keywords.password);
  return info;
}

export function resolveEndpoints(
  options: { source?: string | undefined; target?: string | undefined },
  redactor: Redactor,
): Endpoints {
  return {
    source: resolveEndpoint(options.source, 'source', redactor),
    target: resolveEndpoint(options.target, 'target', redactor),
  };
}
