// `preflight`: read-only checks of both databases and this machine, each finding with its fix. A check
// that fails, including connecting, becomes a finding: preflight reports, it does not throw. Also the
// guard that `snapshot`/`copy` run on the source before they create a publication or a slot.
import type pg from 'pg';
import { openClient, translatePgError } from '../adapters/postgres/client';
import type { ConnInfo } from '../adapters/postgres/connection';
import type { ToolContext } from '../adapters/postgres/pg-tools';
import {
  READ_ONLY_SESSION,
  readSourceFacts,
  readTargetFacts,
  readToolFacts,
} from '../adapters/postgres/preflight-facts';
import type { CommonOptions } from '../config/options';
import { isMigrationError, MigrationError } from '../core/errors';
import {
  buildPreflightReport,
  type ConnectionFailure,
  computeFindings,
  computeSnapshotReadiness,
  errorCodeForFinding,
  type Finding,
  type PreflightReport,
  type Probe,
} from '../core/preflight';
import type { Redactor } from '../core/redact';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';

export interface PreflightOptions extends Pick<CommonOptions, 'migrationId' | 'schemas' | 'pgBindir'> {
  /** How long the source's WAL position is sampled for its write rate (default 1 s). */
  walSampleMs?: number;
  /** The copy will run with --skip-schema (existing target schema; no pg_dump/pg_restore needed). */
  skipSchema?: boolean;
  /** The copy will run with --skip-roles (no pg_dumpall needed). */
  skipRoles?: boolean;
  /** --allow-timescaledb-version-mismatch: different TimescaleDB versions are a warning, not an error. */
  allowTimescaledbVersionMismatch?: boolean;
}

/** Findings that do not apply to how the copy will run. */
function applies(f: Finding, options: PreflightOptions): boolean {
  const tool = f.code.startsWith('PG_TOOL_') ? f.objects?.[0] : undefined;
  if (options.skipSchema && (f.code === 'TARGET_NOT_EMPTY' || tool === 'pg_dump' || tool === 'pg_restore'))
    return false;
  if (options.skipRoles && tool === 'pg_dumpall') return false;
  return true;
}

export async function runPreflight(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: PreflightOptions,
): Promise<PreflightReport> {
  const tools: ToolContext = { binDir: options.pgBindir, env: ctx.env, redactor: ctx.redactor };
  const scope = { migrationId: options.migrationId, schemas: options.schemas };
  const [source, target, toolFacts] = await Promise.all([
    probe(endpoints.source, ctx.redactor, (client) =>
      readSourceFacts(client, endpoints.source.display, {
        ...scope,
        walSampleMs: options.walSampleMs ?? 1000,
      }),
    ),
    probe(endpoints.target, ctx.redactor, (client) =>
      readTargetFacts(client, endpoints.target.display, scope),
    ),
    readToolFacts(tools),
  ]);
  const findings = computeFindings({
    ...scope,
    source,
    target,
    tools: toolFacts,
    allowTimescaledbVersionMismatch: options.allowTimescaledbVersionMismatch === true,
  }).filter((f) => applies(f, options));
  // Server messages can quote anything; whatever a finding says passes the redactor once more.
  const safe = findings.map((f) => ({
    ...f,
    message: ctx.redactor.redact(f.message),
    fix: ctx.redactor.redact(f.fix),
  }));
  return buildPreflightReport(options.migrationId, safe);
}

/** Connects read-only and reads facts; a failure to connect (or to read the basics) is the result. */
async function probe<T>(
  info: ConnInfo,
  redactor: Redactor,
  read: (client: pg.Client) => Promise<T>,
): Promise<Probe<T>> {
  let client: pg.Client;
  try {
    client = await openClient(info);
  } catch (error) {
    return { ok: false, failure: toFailure(error, info, redactor) };
  }
  try {
    // Best effort: a pooler may refuse SET, and the checks only read anyway.
    await client.query(READ_ONLY_SESSION).catch(() => undefined);
    return { ok: true, facts: await read(client) };
  } catch (error) {
    return { ok: false, failure: toFailure(error, info, redactor) };
  } finally {
    await client.end().catch(() => undefined);
  }
}

function toFailure(error: unknown, info: ConnInfo, redactor: Redactor): ConnectionFailure {
  const translated = translatePgError(error, info);
  if (isMigrationError(translated)) {
    const kind =
      translated.code === 'CONNECTION_FAILED'
        ? 'unreachable'
        : translated.code === 'AUTHENTICATION_FAILED'
          ? 'auth'
          : translated.code === 'DATABASE_NOT_FOUND'
            ? 'database'
            : 'other';
    return { kind, message: redactor.redact(translated.message), hint: redactor.redact(translated.hint) };
  }
  const text = translated instanceof Error ? translated.message : String(translated);
  return {
    kind: 'other',
    message: redactor.redact(
      `Connected to the ${info.role} (${info.display}) but could not read its settings: ${text}.`,
    ),
    hint: `Check the ${info.role} server's log and the connection options (sslmode, options) of the ${info.role} connection string.`,
  };
}

/**
 * Refuses to create a slot or publications on a source that cannot carry them: throws the first
 * blocking finding as a MigrationError (code, what was observed, the fix) before anything is created.
 * Call with the source client of `snapshot`/`copy` outside a transaction (a check whose query fails is
 * skipped, which would abort one), after the slot-exists check.
 */
export async function assertSourceReadyForSnapshot(
  source: pg.Client,
  options: Pick<CommonOptions, 'migrationId' | 'schemas'>,
): Promise<void> {
  const facts = await readSourceFacts(source, '', { ...options, walSampleMs: 0 });
  const blockers = computeSnapshotReadiness(facts, options.schemas).filter((f) => f.severity === 'error');
  const first = blockers[0];
  if (!first) return;
  throw findingError(first, blockers);
}

function findingError(first: Finding, all: Finding[]): MigrationError {
  const more =
    all.length > 1
      ? ` (and ${all.length - 1} more: ${all
          .slice(1)
          .map((f) => f.code)
          .join(', ')}; run preflight for all of them)`
      : '';
  return new MigrationError(errorCodeForFinding(first.code), `${first.message}${more}`, first.fix, {
    details: { findings: all },
  });
}
