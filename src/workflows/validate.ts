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
import { openClient, setCanonicalSession, translatePgError, withClient } from '../adapters/postgres/client';
import type { ConnInfo } from '../adapters/postgres/connection';
import { readMigration } from '../adapters/postgres/control-schema';
import { beginInSnapshot } from '../adapters/postgres/copy-part';
import { isBackendAlive } from '../adapters/postgres/replication-slot';
import { listTables } from '../adapters/postgres/source-catalog';
import { chunkCopies, readChunks, recopyChunks } from '../adapters/postgres/timescaledb';
import type { ValidateOptions } from '../config/options';
import { isMigrationError, MigrationError } from '../core/errors';
import { isCopied, type TableInfo, tableKey } from '../core/plan';
import { displayName, quoteQualified } from '../core/sql';
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
  /**
   * Compare the contents of keyless hypertables' chunks even without --checksum: their updates and deletes
   * are not decoded, so equal row counts prove nothing (the cutover).
   */
  checksumKeylessChunks?: boolean;
  /** Chunks (tableKey) compared by contents even without --checksum (created during the migration). */
  checksumChunks?: ReadonlySet<string>;
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
    // TimescaleDB: a chunk is compared with the rows of its range in the target's hypertable (the target's
    // chunks have their own names); the chunk is read whole, compressed rows included.
    const chunkedHypertables = [
      ...new Map(
        sourceTables.flatMap((t) => (t.chunkOf ? [[tableKey(t.chunkOf), t.chunkOf] as const] : [])),
      ).values(),
    ];
    const chunks = new Map((await readChunks(source0, chunkedHypertables)).map((c) => [tableKey(c), c]));
    const readAs = (t: TableInfo): { source?: string; target?: string; onTarget: TableInfo | undefined } => {
      const chunk = t.chunkOf ? chunks.get(tableKey(t)) : undefined;
      if (!t.chunkOf) {
        // A plain source table that is a hypertable on the target (--hypertable): its rows are in the chunks.
        const onTarget = targetTables.get(tableKey(t));
        return onTarget?.hypertable && !t.hypertable ? { target: quoteQualified(t), onTarget } : { onTarget };
      }
      const predicate = chunk?.predicate ?? 'false';
      return {
        source: quoteQualified(t),
        target: `(SELECT * FROM ${quoteQualified(t.chunkOf)} WHERE ${predicate})`,
        onTarget: targetTables.get(tableKey(t.chunkOf)),
      };
    };

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
            readAs(table),
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
  read: { source?: string; target?: string; onTarget: TableInfo | undefined },
  keyColumns: string[] | null,
  options: ValidateOptions & ValidateTuning,
): Promise<TableValidation> {
  const { source, target, endpoints } = sides;
  const checksum =
    options.checksum ||
    (Boolean(options.checksumKeylessChunks) && Boolean(table.chunkOf) && !table.hasReplicaIdentity) ||
    Boolean(options.checksumChunks?.has(tableKey(table)));
  const onTarget = read.onTarget;
  const sourceRel = { ...table, ...(read.source ? { from: read.source } : {}) };
  const targetRel = { ...table, ...(read.target ? { from: read.target } : {}) };
  const onSource = <T>(p: Promise<T>) => translated(p, endpoints.source);
  const onTargetSide = <T>(p: Promise<T>) => translated(p, endpoints.target);
  const base = {
    table: table.chunkOf ? `${displayName(table.chunkOf)} chunk ${table.name}` : displayName(table),
    ...(table.chunkOf ? { hypertable: displayName(table.chunkOf) } : {}),
    schema: table.schema,
    name: table.name,
    keyColumns,
  };
  if (!onTarget) {
    return buildTableValidation({
      ...base,
      sourceRows: await onSource(readRowCount(source, sourceRel)),
      targetRows: null,
      problem: 'missing on the target',
      checksumSkipped: checksum,
    });
  }
  const present = new Set(onTarget.allColumns);
  const missing = table.allColumns.filter((c) => !present.has(c));
  if (missing.length > 0) {
    const [sourceRows, targetRows] = await Promise.all([
      onSource(readRowCount(source, sourceRel)),
      onTargetSide(readRowCount(target, targetRel)),
    ]);
    return buildTableValidation({
      ...base,
      sourceRows,
      targetRows,
      problem: `column${missing.length > 1 ? 's' : ''} missing on the target: ${missing.join(', ')}`,
      checksumSkipped: checksum,
    });
  }
  if (!checksum) {
    const [sourceRows, targetRows] = await Promise.all([
      onSource(readRowCount(source, sourceRel)),
      onTargetSide(readRowCount(target, targetRel)),
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
  const sourceSpec: ChecksumTable = { ...spec, ...(read.source ? { from: read.source } : {}) };
  const targetSpec: ChecksumTable = { ...spec, ...(read.target ? { from: read.target } : {}) };
  const [sourceDigests, targetDigests] = await Promise.all([
    onSource(readBucketDigests(source, sourceSpec, options.buckets)),
    onTargetSide(readBucketDigests(target, targetSpec, options.buckets)),
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
      streamRowDigests(source, sourceSpec, stream),
      streamRowDigests(target, targetSpec, stream),
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
 * `validate --repair`: the TimescaleDB chunks that differ are copied again from the source as it is now
 * (each in one target transaction: the range's rows deleted from the hypertable, the chunk's rows copied),
 * then everything is compared again. Other tables are only reported.
 */
export async function repairDifferingChunks(
  ctx: WorkflowContext,
  endpoints: Endpoints,
  options: ValidateOptions & ValidateTuning,
  report: ValidationReport,
): Promise<ValidationReport> {
  if (report.ok) return report;
  const schemas = options.schemas ?? null;
  const differing = report.tables.filter((t) => !t.ok);
  const copies = await withClient(endpoints.source, (source) => chunkCopies(source, schemas, differing));
  const log = (level: 'info' | 'warn', message: string) => ctx.emit({ type: 'log', level, message });
  if (copies.length < differing.length) {
    log(
      'warn',
      `${differing.length - copies.length} differing tables are not TimescaleDB chunks: --repair leaves them as they are.`,
    );
  }
  if (copies.length === 0) return report;
  const rows = await withClient(endpoints.source, (source) =>
    withClient(endpoints.target, (target) => recopyChunks(source, target, copies)),
  );
  log(
    'info',
    `Copied ${copies.length} chunks again (${rows.reduce((a, b) => a + b, 0)} rows): ${copies.map((c) => `${c.chunk.schema}.${c.chunk.name}`).join(', ')}.`,
  );
  return runValidate(ctx, endpoints, options);
}
