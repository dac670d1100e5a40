// The only objects the tool creates on the source: its publications and its logical replication slot,
// created with an exported snapshot on a replication connection that must stay open (and idle) for as
// long as anyone imports the snapshot. https://www.postgresql.org/docs/current/protocol-replication.html
import type pg from 'pg';
import { MigrationError } from '../../core/errors';
import { buildPublicationSets, type TableInfo } from '../../core/plan';
import { quoteIdent, quoteQualified } from '../../core/sql';
import { openClient, translatePgError } from './client';
import type { ConnInfo } from './connection';

export const slotNameFor = (migrationId: string) => `pg_live_migrate_${migrationId}`;
export const publicationNameFor = (migrationId: string, kind: 'full' | 'insert_only' | 'chunks') =>
  kind === 'full' ? `pg_live_migrate_${migrationId}` : `pg_live_migrate_${migrationId}_${kind}`;

export interface SlotInfo {
  slotName: string;
  plugin: string | null;
  database: string | null;
  activePid: number | null;
  confirmedFlushLsn: string | null;
  restartLsn: string | null;
  retainedBytes: number | null;
}

export async function readSlot(client: pg.Client, slotName: string): Promise<SlotInfo | undefined> {
  const { rows } = await client.query(
    `SELECT slot_name, plugin, database, active_pid, confirmed_flush_lsn::text AS confirmed,
            restart_lsn::text AS restart, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slotName],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    slotName: r.slot_name,
    plugin: r.plugin,
    database: r.database,
    activePid: r.active_pid,
    confirmedFlushLsn: r.confirmed,
    restartLsn: r.restart,
    retainedBytes: r.retained === null ? null : Number(r.retained),
  };
}

/** Creates the migration's publications (before the slot, so the slot's decoding sees them). */
export async function createPublications(
  client: pg.Client,
  migrationId: string,
  tables: TableInfo[],
  /**
   * TimescaleDB hypertables on the source. A superuser gets a publication of the chunk schemas (chunks
   * created later are published from their first row); otherwise the replay adds new chunks as it finds
   * them, to the full publication or, for keyless hypertables, to the insert-only one, created even empty.
   */
  timescale: { chunkSchemas: string[]; superuser: boolean } | null = null,
): Promise<string[]> {
  const sets = buildPublicationSets(tables);
  const created: string[] = [];
  const define = async (name: string, members: TableInfo[], publish: string) => {
    const list = members.length ? ` FOR TABLE ${members.map(quoteQualified).join(', ')}` : '';
    await client.query(
      `CREATE PUBLICATION ${quoteIdent(name)}${list} WITH (publish = '${publish}', publish_via_partition_root = false)`,
    );
    created.push(name);
  };
  await define(publicationNameFor(migrationId, 'full'), sets.full, 'insert, update, delete, truncate');
  if (sets.insertOnly.length > 0 || (timescale && !timescale.superuser)) {
    await define(publicationNameFor(migrationId, 'insert_only'), sets.insertOnly, 'insert, truncate');
  }
  const chunkSchemas = timescale?.superuser ? timescale.chunkSchemas : [];
  if (chunkSchemas.length > 0) {
    // INSERT only: publishing UPDATE/DELETE would make them fail on the source for TimescaleDB's keyless
    // internal tables (continuous aggregates' materializations, compressed data). The chunks of keyed
    // hypertables are in the full publication; a chunk created later is added there by the replay.
    const name = publicationNameFor(migrationId, 'chunks');
    await client.query(
      `CREATE PUBLICATION ${quoteIdent(name)} FOR TABLES IN SCHEMA ${chunkSchemas.map(quoteIdent).join(', ')} WITH (publish = 'insert')`,
    );
    created.push(name);
  }
  return created;
}

export async function listPublications(client: pg.Client, migrationId: string): Promise<string[]> {
  const { rows } = await client.query(
    `SELECT pubname FROM pg_publication WHERE pubname = ANY($1::text[]) ORDER BY 1`,
    [(['full', 'insert_only', 'chunks'] as const).map((kind) => publicationNameFor(migrationId, kind))],
  );
  return rows.map((r) => r.pubname);
}

export async function dropPublications(client: pg.Client, migrationId: string): Promise<string[]> {
  const names = await listPublications(client, migrationId);
  for (const name of names) await client.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  return names;
}

/** Drops the slot, first ending the walsender that holds it (ours, by its name). */
export async function dropSlot(client: pg.Client, slotName: string): Promise<boolean> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const slot = await readSlot(client, slotName);
    if (!slot) return attempt > 0;
    if (slot.activePid !== null) {
      await client.query('SELECT pg_terminate_backend($1)', [slot.activePid]);
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    try {
      await client.query('SELECT pg_drop_replication_slot($1)', [slotName]);
      return true;
    } catch (error) {
      // 55006: the slot became active again between our look and the drop; loop and retry.
      if ((error as { code?: string }).code !== '55006') throw error;
    }
  }
  throw new MigrationError(
    'SLOT_IN_USE',
    `Replication slot '${slotName}' stayed in use after ending its holder 20 times.`,
    'Stop the process that is replaying this migration, then run clean again.',
  );
}

export interface SnapshotHolder {
  slotName: string;
  snapshotName: string;
  consistentLsn: string;
  /** Backend pid of the connection holding the snapshot on the source (alive = snapshot usable). */
  backendPid: number;
  /** Resolves when the holding connection ends for any reason. */
  readonly ended: Promise<void>;
  close(): Promise<void>;
}

/**
 * Creates the slot with an exported snapshot and keeps its replication connection open. The snapshot
 * can be imported (SET TRANSACTION SNAPSHOT) until close() or until this connection dies.
 */
export async function createSlotWithSnapshot(info: ConnInfo, slotName: string): Promise<SnapshotHolder> {
  const client = await openClient(info, { replication: 'database' } as pg.ClientConfig);
  let endedResolve: () => void = () => undefined;
  const ended = new Promise<void>((resolve) => {
    endedResolve = resolve;
  });
  client.on('end', () => endedResolve());
  try {
    const pid = await client.query(
      "SELECT pg_backend_pid() AS pid, current_setting('server_version_num')::int AS v",
    );
    const version = Number(pid.rows[0].v);
    const options = version >= 150000 ? `(SNAPSHOT 'export')` : 'EXPORT_SNAPSHOT';
    const result = await client.query(
      `CREATE_REPLICATION_SLOT ${quoteIdent(slotName)} LOGICAL pgoutput ${options}`,
    );
    const row = result.rows[0];
    return {
      slotName,
      snapshotName: row.snapshot_name,
      consistentLsn: row.consistent_point,
      backendPid: Number(pid.rows[0].pid),
      ended,
      close: async () => {
        await client.end().catch(() => undefined);
      },
    };
  } catch (error) {
    await client.end().catch(() => undefined);
    if ((error as { code?: string }).code === '42710') {
      throw new MigrationError(
        'SLOT_ALREADY_EXISTS',
        `Replication slot '${slotName}' already exists on the source.`,
        `Another migration with this --migration-id is under way or was not cleaned. Resume it with --resume, or remove it with 'pg-live-migrate clean --migration-id …', or pick another --migration-id.`,
        { cause: error },
      );
    }
    const sqlstate = (error as { code?: string }).code;
    const text = (error as Error).message;
    // The guard in startSnapshot checks these first; a change in between still gets a clear error.
    if (sqlstate === '55000' && /wal_level/.test(text)) {
      throw new MigrationError(
        'SOURCE_WAL_LEVEL_NOT_LOGICAL',
        `Creating slot '${slotName}' failed: ${text}.`,
        'ALTER SYSTEM SET wal_level = logical; then restart the source (RDS/Aurora: rds.logical_replication = 1).',
        { cause: error },
      );
    }
    if (sqlstate === '53400') {
      throw new MigrationError(
        'SOURCE_NO_FREE_REPLICATION_SLOT',
        `Creating slot '${slotName}' failed: ${text}.`,
        'Drop unused slots (SELECT slot_name, active FROM pg_replication_slots;) or raise max_replication_slots and restart the source.',
        { cause: error },
      );
    }
    throw translatePgError(error, info);
  }
}

/**
 * A fresh exported snapshot with an exact LSN (the consistent point of a temporary slot, dropped by the
 * server when this connection ends): used to resume a copy whose first snapshot was lost.
 */
export async function createTemporarySnapshot(info: ConnInfo, slotName: string): Promise<SnapshotHolder> {
  const client = await openClient(info, { replication: 'database' } as pg.ClientConfig);
  let endedResolve: () => void = () => undefined;
  const ended = new Promise<void>((resolve) => {
    endedResolve = resolve;
  });
  client.on('end', () => endedResolve());
  try {
    const meta = await client.query(
      "SELECT pg_backend_pid() AS pid, current_setting('server_version_num')::int AS v",
    );
    const options = Number(meta.rows[0].v) >= 150000 ? `(SNAPSHOT 'export')` : 'EXPORT_SNAPSHOT';
    const result = await client.query(
      `CREATE_REPLICATION_SLOT ${quoteIdent(slotName)} TEMPORARY LOGICAL pgoutput ${options}`,
    );
    return {
      slotName,
      snapshotName: result.rows[0].snapshot_name,
      consistentLsn: result.rows[0].consistent_point,
      backendPid: Number(meta.rows[0].pid),
      ended,
      close: async () => {
        await client.end().catch(() => undefined);
      },
    };
  } catch (error) {
    await client.end().catch(() => undefined);
    throw translatePgError(error, info);
  }
}

/** True while the source backend holding an exported snapshot is alive. */
export async function isBackendAlive(client: pg.Client, pid: number | null): Promise<boolean> {
  if (pid === null) return false;
  const { rowCount } = await client.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
  return (rowCount ?? 0) > 0;
}
