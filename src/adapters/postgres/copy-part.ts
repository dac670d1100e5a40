// Streams one part of one table from the source snapshot into the target: COPY TO STDOUT piped into
// COPY FROM STDIN, and the part's done mark committed in the same target transaction.
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { MigrationError } from '../../core/errors';
import { buildCopyInSql, buildCopyOutSql, type PartPlan } from '../../core/plan';
import { displayName, type QualifiedName } from '../../core/sql';
import { sqlState } from './client';
import { markPartDone } from './control-schema';

/** Starts the REPEATABLE READ transaction that reads in the exported snapshot. */
export async function beginInSnapshot(client: pg.Client, snapshotName: string): Promise<void> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replaceAll("'", "''")}'`);
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    // 22023 invalid snapshot identifier: the exporting connection has closed.
    if (sqlState(error) === '22023' || /snapshot/i.test((error as Error).message)) {
      throw new MigrationError(
        'SNAPSHOT_EXPIRED',
        `Exported snapshot '${snapshotName}' can no longer be imported: the process that held it has ended.`,
        "A copy must finish inside one snapshot. Start the snapshot holder again ('pg-live-migrate snapshot') only after 'pg-live-migrate clean', or resume later with a fresh snapshot ('migrate --resume', next release). Finished parts stay on the target.",
        { cause: error },
      );
    }
    throw error;
  }
}

export interface PartResult {
  rows: number;
  bytes: number;
  seconds: number;
}

export async function copyPart(args: {
  source: pg.Client;
  target: pg.Client;
  migrationId: string;
  part: PartPlan;
  columns: string[];
  /** A TimescaleDB chunk's hypertable on the target: the chunk's rows are copied into it. */
  into?: QualifiedName;
  /**
   * A chunk compressed on the source: its rows are read in its compression order (segment-by, then
   * order-by columns) and compressed as they arrive on the target (TimescaleDB's direct compression of COPY),
   * instead of being written uncompressed, indexed and compressed again.
   */
  compressOrder?: string;
  onBytes?: (bytes: number) => void;
  nowMs: () => number;
  /** The caller already opened the target transaction (it holds the part's claim). */
  inTransaction?: boolean;
}): Promise<PartResult> {
  const { source, target, part, columns } = args;
  const started = args.nowMs();
  if (!args.inTransaction) await target.query('BEGIN');
  try {
    // Safe without a durable flush: the rows and their done mark are lost or kept together.
    await target.query('SET LOCAL synchronous_commit = off');
    if (args.compressOrder) {
      await target.query(
        'SET LOCAL timescaledb.enable_direct_compress_copy = on; SET LOCAL timescaledb.enable_direct_compress_copy_client_sorted = on',
      );
    }
    const reader = source.query(
      copyTo(
        buildCopyOutSql(part, columns, {
          chunk: Boolean(args.into),
          ...(args.compressOrder ? { orderBy: args.compressOrder } : {}),
        }),
      ),
    );
    const writer = target.query(copyFrom(buildCopyInSql(args.into ?? part, columns)));
    let bytes = 0;
    let lastReport = 0;
    reader.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (args.onBytes && bytes - lastReport > 4 * 1024 * 1024) {
        args.onBytes(bytes);
        lastReport = bytes;
      }
    });
    await pipeline(reader, writer);
    const rows = writer.rowCount;
    const seconds = (args.nowMs() - started) / 1000;
    await markPartDone(target, args.migrationId, part.partId, { rows, bytes, seconds });
    await target.query('COMMIT');
    return { rows, bytes, seconds };
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    if (error instanceof MigrationError) throw error;
    throw new MigrationError(
      'COPY_FAILED',
      `Copying ${displayName(part)} (part ${part.partIndex + 1}/${part.partCount}) failed: ${(error as Error).message}`,
      'Fix the cause named above, then run the same command with --resume: finished parts are kept and not copied again.',
      { cause: error, details: { table: displayName(part), sqlState: sqlState(error) } },
    );
  }
}
