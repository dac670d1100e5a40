// `validate`: row counts (and with --checksum, contents) of every copied table on both sides. Each side
// is read at one point in time by all its connections: the source in the migration's exported snapshot
// while its holder lives (the point the copy read), otherwise live; the target in a snapshot of its own.
import type pg from 'pg';
import {
  beginExported,
  type ChecksumTable,
  readBucketDigests,
  readReplicaIdentityColumns,
  readRowCount,
  streamRowDigests,
} from '../adapters/postgres/checksum';
import { openClient, setCanonicalSession, translatePgError } from '../adapters/postgres/client';
import type { ConnInfo } from '../adapters/postgres/connection';
import { readMigration } from '../adapters/postgres/control-schema';
import { beginInSnapshot } from '../adapters/postgres/copy-part';
import { isBackendAlive } from '../adapters/postgres/replication-slot';
import { listTables } from '../adapters/postgres/source-catalog';
import type { ValidateOptions } from '../config/options';
import { isMigrationError, MigrationError } from '../core/errors';
import { isCopied, type TableInfo, tableKey } from '../core/plan';
import { displayName } from '../core/sql';
import {
  buildTableValidation,
  buildValidationReport,
  diffBuckets,
  diffRowStreams,
  type KeyDifference,
  sumRows,
  type TableValidation,
  type ValidationReport,
} from '../core/validation';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';

/** Knobs tests turn; the CLI uses the defaults. */
export interface ValidateTuning {
  /** Connections per side, each comparing one table at a time. */
  jobs?: number;
  /** Rows fetched per cursor round trip while looking for differing keys. */
  batchRows?: number;
  /** How many differing keys are listed per table. */
  maxDifferences?: number;
  /** How often a progress line is emitted. */
  progressEveryMs?: number;
  /** Read the source in this exported snapshot (the replay is paused at its LSN, so both sides match). */
  alignedSnapshot?: { name: string; lsn: string };
  /** Why the source may be read live without a warning (e.g. after a cutover drain). */
  liveNote?: string;
}

export const LIVE_SOURCE_WARNING =
  "The migration's exported snapshot is not held (or none is recorded), so the source was read live: " +
  'the comparison only means something if nothing writes to the source while validate runs. ' +
  '(A later release aligns validation with replay.)';

export async function runValidate(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: ValidateOptions & ValidateTuning,
): Promise<ValidationReport> {
  const jobs = options.jobs ?? 2;
  const sources: pg.Client[] = [];
  const targets: pg.Client[] = [];
  try {
    // All connections first, so a refused login fails before any work.
    const open = async (info: ConnInfo, into: pg.Client[]) => {
      const client = await openClient(info);
      into.push(client);
      await setCanonicalSession(client);
      return client;
    };
    // allSettled: every connection that did open is in the lists (and closed below) even when one fails.
    const opened = await Promise.allSettled(
      Array.from({ length: jobs }, () => [
        open(endpoints.source, sources),
        open(endpoints.target, targets),
      ]).flat(),
    );
    const refused = opened.find((o) => o.status === 'rejected');
    if (refused) throw refused.reason;
    const [source0, target0] = [sources[0], targets[0]];
    if (!source0 || !target0) throw new TypeError('validate needs at least one connection per side');

    const migration = await readMigration(target0, options.migrationId);
    await refuseHypertables(source0, options.schemas ?? migration?.schemas ?? null);
    const warnings: string[] = [];
    let sourceMode: ValidationReport['sourceMode'] = 'live';
    if (options.alignedSnapshot) {
      for (const client of sources) await beginInSnapshot(client, options.alignedSnapshot.name);
      sourceMode = 'aligned';
      ctx.emit({
        type: 'log',
        level: 'info',
        message: `Reading the source at ${options.alignedSnapshot.lsn}, where the replay is paused.`,
      });
    } else if (
      migration?.snapshotName &&
      // Once replay has applied changes the target is past the copy's snapshot: comparing there is wrong.
      ['preflight', 'snapshot', 'copy'].includes(migration.phase) &&
      (await isBackendAlive(source0, migration.snapshotHolderPid))
    ) {
      try {
        for (const client of sources) await beginInSnapshot(client, migration.snapshotName);
        sourceMode = 'snapshot';
        ctx.emit({
          type: 'log',
          level: 'info',
          message: `Reading the source in snapshot ${migration.snapshotName} (held by source backend ${migration.snapshotHolderPid}), the point the copy read.`,
        });
      } catch (error) {
        // The holder ended between our look and the import: fall back to reading live.
        if (!isMigrationError(error) || error.code !== 'SNAPSHOT_EXPIRED') throw error;
        for (const client of sources) await client.query('ROLLBACK');
      }
    }
    if (sourceMode === 'live') {
      await alignOnOneSnapshot(sources);
      if (options.liveNote) {
        ctx.emit({ type: 'log', level: 'info', message: options.liveNote });
      } else {
        warnings.push(LIVE_SOURCE_WARNING);
        ctx.emit({ type: 'log', level: 'warn', message: LIVE_SOURCE_WARNING });
      }
    }
    await alignOnOneSnapshot(targets);

    const schemas = options.schemas ?? migration?.schemas ?? null;
    const sourceTables = (await listTables(source0, schemas)).filter(isCopied);
    const targetTables = new Map((await listTables(target0, schemas)).map((t) => [tableKey(t), t]));
    const identityKeys = await readReplicaIdentityColumns(
      source0,
      sourceTables.filter((t) => !t.primaryKey?.length && t.replicaIdentity === 'index'),
    );
    const keyOf = (t: TableInfo) =>
      t.primaryKey?.length ? t.primaryKey : (identityKeys.get(tableKey(t)) ?? null);

    ctx.emit({
      type: 'step',
      step: 'validate',
      status: 'start',
      detail: `${sourceTables.length} tables, ${options.checksum ? `checksums in ${options.buckets} key ranges` : 'row counts'}`,
    });
    const results = new Map<string, TableValidation>();
    // Largest first so the long tables do not start last.
    const queue = [...sourceTables].sort((a, b) => b.bytes - a.bytes);
    let failure: unknown;
    let lastProgress = ctx.clock.nowMs();
    const worker = async (source: pg.Client, target: pg.Client) => {
      for (let table = queue.shift(); table && !failure; table = queue.shift()) {
        if (ctx.stopSignal.aborted) return;
        try {
          const result = await compareTable(
            { source, target, endpoints },
            table,
            targetTables.get(tableKey(table)),
            keyOf(table),
            options,
          );
          results.set(tableKey(table), result);
        } catch (error) {
          failure ??= error;
        }
        if (ctx.clock.nowMs() - lastProgress >= (options.progressEveryMs ?? 5000)) {
          lastProgress = ctx.clock.nowMs();
          ctx.emit({
            type: 'log',
            level: 'info',
            message: `validate: ${results.size}/${sourceTables.length} tables compared`,
          });
        }
      }
    };
    await Promise.all(sources.map((source, i) => worker(source, targets[i] ?? target0)));
    if (failure) throw failure;
    if (results.size < sourceTables.length) {
      throw new MigrationError(
        'VALIDATION_INTERRUPTED',
        `Validation was stopped after ${results.size} of ${sourceTables.length} tables; the rest were not compared.`,
        'Run validate again and let it finish: nothing is known about the tables it did not reach.',
      );
    }
    const report = buildValidationReport({
      sourceMode,
      checksum: options.checksum,
      buckets: options.buckets,
      tables: sourceTables.flatMap((t) => results.get(tableKey(t)) ?? []),
      warnings,
    });
    const differing = report.tables.filter((t) => !t.ok).length;
    ctx.emit({
      type: 'step',
      step: 'validate',
      status: 'done',
      detail: differing ? `${differing} of ${report.tables.length} tables differ` : 'all tables match',
    });
    return report;
  } finally {
    // Ending a connection rolls its read-only transaction back.
    await Promise.all([...sources, ...targets].map((c) => c.end().catch(() => undefined)));
  }
}

/**
 * Puts every connection of one side in a REPEATABLE READ transaction on the first one's exported
 * snapshot, so tables compared on different connections are read at the same point.
 */
async function alignOnOneSnapshot(clients: pg.Client[]): Promise<void> {
  const [first, ...rest] = clients;
  if (!first) return;
  const snapshot = await beginExported(first);
  for (const client of rest) await beginInSnapshot(client, snapshot);
}

async function compareTable(
  sides: { source: pg.Client; target: pg.Client; endpoints: Endpoints },
  table: TableInfo,
  onTarget: TableInfo | undefined,
  keyColumns: string[] | null,
  options: ValidateOptions & ValidateTuning,
): Promise<TableValidation> {
  const { source, target, endpoints } = sides;
  const onSource = <T>(p: Promise<T>) => translated(p, endpoints.source);
  const onTargetSide = <T>(p: Promise<T>) => translated(p, endpoints.target);
  const base = {
    table: displayName(table),
    schema: table.schema,
    name: table.name,
    keyColumns,
  };
  if (!onTarget) {
    return buildTableValidation({
      ...base,
      sourceRows: await onSource(readRowCount(source, table)),
      targetRows: null,
      problem: 'missing on the target',
      checksumSkipped: options.checksum,
    });
  }
  const present = new Set(onTarget.allColumns);
  const missing = table.allColumns.filter((c) => !present.has(c));
  if (missing.length > 0) {
    const [sourceRows, targetRows] = await Promise.all([
      onSource(readRowCount(source, table)),
      onTargetSide(readRowCount(target, table)),
    ]);
    return buildTableValidation({
      ...base,
      sourceRows,
      targetRows,
      problem: `column${missing.length > 1 ? 's' : ''} missing on the target: ${missing.join(', ')}`,
      checksumSkipped: options.checksum,
    });
  }
  if (!options.checksum) {
    const [sourceRows, targetRows] = await Promise.all([
      onSource(readRowCount(source, table)),
      onTargetSide(readRowCount(target, table)),
    ]);
    return buildTableValidation({ ...base, sourceRows, targetRows });
  }
  // The source's column list and order on both sides: a target with another physical order still matches.
  const spec: ChecksumTable = {
    schema: table.schema,
    name: table.name,
    columns: table.allColumns,
    keyColumns,
  };
  const [sourceDigests, targetDigests] = await Promise.all([
    onSource(readBucketDigests(source, spec, options.buckets)),
    onTargetSide(readBucketDigests(target, spec, options.buckets)),
  ]);
  const mismatched = diffBuckets(sourceDigests, targetDigests);
  let differences: KeyDifference[] = [];
  if (mismatched.length > 0) {
    const stream = {
      buckets: options.buckets,
      onlyBuckets: mismatched,
      batchRows: options.batchRows ?? 1000,
    };
    differences = await diffRowStreams(
      streamRowDigests(source, spec, stream),
      streamRowDigests(target, spec, stream),
      options.maxDifferences ?? 10,
    );
  }
  return buildTableValidation({
    ...base,
    sourceRows: sumRows(sourceDigests),
    targetRows: sumRows(targetDigests),
    checksum: { buckets: options.buckets, source: sourceDigests, target: targetDigests, differences },
  });
}

async function translated<T>(promise: Promise<T>, info: ConnInfo): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    throw translatePgError(error, info);
  }
}

/**
 * Hypertables cannot be compared yet (their rows live in chunk tables, some of them compressed): say so
 * instead of failing inside TimescaleDB's catalog.
 */
async function refuseHypertables(source: pg.Client, schemas: string[] | null): Promise<void> {
  const { rows } = await source.query(`SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'`);
  if (rows.length === 0) return;
  const found = await source.query<{ name: string }>(
    `SELECT format('%I.%I', hypertable_schema, hypertable_name) AS name FROM timescaledb_information.hypertables
      WHERE $1::text[] IS NULL OR hypertable_schema = ANY($1::text[]) ORDER BY 1`,
    [schemas],
  );
  if (found.rows.length === 0) return;
  throw new MigrationError(
    'TIMESCALEDB_NOT_SUPPORTED_YET',
    `The source has hypertables (${found.rows
      .slice(0, 5)
      .map((r) => r.name)
      .join(
        ', ',
      )}${found.rows.length > 5 ? ` and ${found.rows.length - 5} more` : ''}); validate does not compare hypertables yet.`,
    'Validate the other schemas with --schema, or compare the hypertables by hand (count(*) on each side) until TimescaleDB support lands.',
  );
}
