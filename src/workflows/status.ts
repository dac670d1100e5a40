// `status`: where a migration stands, read from the databases only (any machine that reaches them).
import { withClient } from '../adapters/postgres/client';
import { type Phase, readMigration, readParts } from '../adapters/postgres/control-schema';
import { isBackendAlive, readSlot, slotNameFor } from '../adapters/postgres/replication-slot';
import type { CommonOptions } from '../config/options';
import { formatBytes, formatCount } from '../core/format';
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
  /** Filled by live replay (next release); null until then. */
  lagBytes: number | null;
  lagSeconds: number | null;
  sourceReachable: boolean;
  error: { code: string; message: string; hint: string } | null;
}

export async function readStatus(
  endpoints: Endpoints,
  options: Pick<CommonOptions, 'migrationId'>,
): Promise<MigrationStatus> {
  const id = options.migrationId;
  const { migration, parts } = await withClient(endpoints.target, async (c) => ({
    migration: await readMigration(c, id),
    parts: await readParts(c, id),
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
    phase: migration?.phase ?? 'preflight',
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
    lagBytes: null,
    lagSeconds: null,
    sourceReachable: source !== undefined,
    error: migration?.error ?? null,
  };
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
  if (s.error) lines.push(`  last error ${s.error.code}: ${s.error.message}`);
  return `${lines.join('\n')}\n`;
}
