// `status`: where a migration stands, read from the databases only (any machine that reaches them).

import type pg from 'pg';
import { withClient } from '../adapters/postgres/client';
import {
  CONTROL_SCHEMA,
  controlSchemaExists,
  type Phase,
  readMigration,
  readParts,
} from '../adapters/postgres/control-schema';
import { isBackendAlive, readSlot, slotNameFor } from '../adapters/postgres/replication-slot';
import type { CommonOptions } from '../config/options';
import { formatBytes, formatCount, formatDuration } from '../core/format';
import { CAUGHT_UP_BYTES } from '../core/lag';
import { tableKey } from '../core/plan';
import type { Endpoints } from './connections';

export interface MigrationStatus {
  migrationId: string;
  exists: boolean;
  phase: Phase;
  tables: { done: number; total: number };
  parts: { done: number; total: number };
  rowsCopied: number;
  bytesCopied: number;
  copyFinished: boolean;
  consistentLsn: string | null;
  snapshot: { name: string | null; held: boolean | null };
  slot: { name: string; exists: boolean | null; active: boolean | null; retainedBytes: number | null };
  /** From the running replay's last report; null before replay starts. */
  lagBytes: number | null;
  lagSeconds: number | null;
  replay: {
    appliedLsn: string;
    sourceLsn: string | null;
    sourceWalRate: number | null;
    replayRate: number | null;
    etaSeconds: number | null;
    triggerMode: string | null;
    spooledLsn: string | null;
    spooledChanges: number;
    /** Whether a replay process has reported within the last 30 s. */
    alive: boolean;
    lastReportAgeSeconds: number | null;
    pausedAt: string | null;
  } | null;
  sourceReachable: boolean;
  error: { code: string; message: string; hint: string } | null;
}

export async function readStatus(
  endpoints: Endpoints,
  options: Pick<CommonOptions, 'migrationId'>,
): Promise<MigrationStatus> {
  const id = options.migrationId;
  const { migration, parts, replay } = await withClient(endpoints.target, async (c) => ({
    migration: await readMigration(c, id),
    parts: await readParts(c, id),
    replay: await readReplayStatus(c, id),
  }));
  const byTable = new Map<string, boolean>();
  for (const p of parts) byTable.set(tableKey(p), (byTable.get(tableKey(p)) ?? true) && p.done);
  const slotName = migration?.slotName ?? slotNameFor(id);
  let source: { slot: Awaited<ReturnType<typeof readSlot>>; held: boolean } | undefined;
  try {
    source = await withClient(endpoints.source, async (c) => ({
      slot: await readSlot(c, slotName),
      held: await isBackendAlive(c, migration?.snapshotHolderPid ?? null),
    }));
  } catch {
    source = undefined;
  }
  const done = parts.filter((p) => p.done);
  return {
    migrationId: id,
    exists: migration !== undefined,
    // A recorded, unresolved error means the last run stopped on it: resumable, but failed for now.
    phase: migration?.error ? 'failed' : (migration?.phase ?? 'preflight'),
    tables: { done: [...byTable.values()].filter(Boolean).length, total: byTable.size },
    parts: { done: done.length, total: parts.length },
    rowsCopied: done.reduce((s, p) => s + (p.rows ?? 0), 0),
    bytesCopied: done.reduce((s, p) => s + (p.bytes ?? 0), 0),
    copyFinished: Boolean(migration?.copyFinishedAt),
    consistentLsn: migration?.consistentLsn ?? null,
    snapshot: { name: migration?.snapshotName ?? null, held: source ? source.held : null },
    slot: {
      name: slotName,
      exists: source ? source.slot !== undefined : null,
      active: source ? (source.slot?.activePid ?? null) !== null : null,
      retainedBytes: source?.slot?.retainedBytes ?? null,
    },
    // Null until the running replay has measured a lag: never "0 B, caught up" before anything is known.
    lagBytes: replay && replay.lag_bytes !== null ? Number(replay.lag_bytes) : null,
    lagSeconds: replay && replay.lag_seconds !== null ? Number(replay.lag_seconds) : null,
    replay: replay
      ? {
          appliedLsn: replay.applied_lsn,
          sourceLsn: replay.source_lsn,
          sourceWalRate: replay.source_wal_rate,
          replayRate: replay.replay_rate,
          etaSeconds:
            replay.lag_bytes === null
              ? null
              : replay.lag_bytes <= CAUGHT_UP_BYTES
                ? 0
                : replay.replay_rate > replay.source_wal_rate
                  ? replay.lag_bytes / (replay.replay_rate - replay.source_wal_rate)
                  : null,
          triggerMode: replay.trigger_mode,
          spooledLsn: replay.spooled_lsn,
          spooledChanges: Number(replay.spooled ?? 0),
          alive: replay.age_s !== null && Number(replay.age_s) < 30,
          lastReportAgeSeconds: replay.age_s === null ? null : Number(replay.age_s),
          pausedAt: replay.paused_at,
        }
      : null,
    sourceReachable: source !== undefined,
    error: migration?.error ?? null,
  };
}

async function readReplayStatus(c: pg.Client, id: string) {
  if (!(await controlSchemaExists(c))) return undefined;
  const { rows } = await c.query(
    `SELECT applied_lsn::text, spooled_lsn::text, source_lsn::text, lag_bytes::float8 AS lag_bytes, lag_seconds,
            source_wal_rate, replay_rate, trigger_mode, paused_at::text,
            extract(epoch FROM now() - heartbeat_at)::float8 AS age_s,
            (SELECT count(*) FROM "${CONTROL_SCHEMA}".spool s WHERE s.migration_id = r.migration_id) AS spooled
       FROM "${CONTROL_SCHEMA}".replay r WHERE migration_id = $1`,
    [id],
  );
  return rows[0];
}

export function renderStatusText(s: MigrationStatus): string {
  if (!s.exists)
    return `Migration '${s.migrationId}': nothing recorded on the target yet (run preflight, then copy).\n`;
  const lines = [
    `Migration '${s.migrationId}': phase ${s.phase}${s.copyFinished ? ' (copy finished)' : ''}`,
    `  tables ${s.tables.done}/${s.tables.total}, parts ${s.parts.done}/${s.parts.total}, ${formatCount(s.rowsCopied)} rows, ${formatBytes(s.bytesCopied)}`,
    `  snapshot ${s.snapshot.name ?? '-'}: ${s.snapshot.held === null ? 'unknown (source unreachable)' : s.snapshot.held ? 'held' : 'not held'}`,
    `  slot ${s.slot.name}: ${s.slot.exists === null ? 'unknown (source unreachable)' : s.slot.exists ? `${s.slot.active ? 'active' : 'inactive'}, retains ${formatBytes(s.slot.retainedBytes ?? 0)} of WAL` : 'missing'}`,
    `  consistent point ${s.consistentLsn ?? '-'}`,
  ];
  if (s.replay) {
    const r = s.replay;
    lines.push(
      `  replay ${r.alive ? 'running' : 'NOT running'}${r.lastReportAgeSeconds !== null ? ` (last report ${r.lastReportAgeSeconds.toFixed(0)} s ago)` : ''}: applied ${r.appliedLsn}, source ${r.sourceLsn ?? '-'}`,
      s.lagBytes === null
        ? '  lag not measured yet (the replay reports it every --lag-interval)'
        : `  lag ${formatBytes(s.lagBytes)} / ${(s.lagSeconds ?? 0).toFixed(1)} s; source WAL ${formatBytes(r.sourceWalRate ?? 0)}/s, replay ${formatBytes(r.replayRate ?? 0)}/s, ETA ${r.etaSeconds === null ? 'not catching up' : formatDuration(r.etaSeconds * 1000)}`,
    );
    if (r.spooledChanges) lines.push(`  ${r.spooledChanges} spooled rows waiting to be applied`);
    if (r.pausedAt) lines.push(`  paused at ${r.pausedAt} for validation`);
  }
  if (s.error) lines.push(`  last error ${s.error.code}: ${s.error.message}`);
  return `${lines.join('\n')}\n`;
}
