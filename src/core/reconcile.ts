// After a copy resumed from a fresh snapshot (L2), changes committed before L2 are skipped for tables
// copied wholly at L2, and applied idempotently to keyed tables that mix parts from both snapshots.
import type { Change, RelationRef } from './changes';
import { relKey } from './changes';
import type { Lsn } from './lsn';

export type RefreshRules = Map<string, { lsn: Lsn; mode: 'skip' | 'idempotent' }>;

export interface Reconciled {
  change: Change;
  idempotent: boolean;
}

/** A change of a transaction committed at commitLsn, as the refresh rules want it applied (or dropped). */
export function reconcile(change: Change, commitLsn: Lsn, rules: RefreshRules): Reconciled | undefined {
  if (rules.size === 0) return { change, idempotent: false };
  const rule = (rel: RelationRef) => {
    // A TimescaleDB chunk was copied as a part of its own: its rule is the chunk's, not its hypertable's.
    const r = rules.get(relKey(rel.chunk ?? rel));
    return r && commitLsn < r.lsn ? r.mode : undefined;
  };
  if (change.kind === 'truncate') {
    const rels = change.rels.filter((rel) => rule(rel) !== 'skip');
    if (rels.length === 0) return undefined;
    return { change: { ...change, rels }, idempotent: rels.some((rel) => rule(rel) === 'idempotent') };
  }
  const mode = rule(change.rel);
  if (mode === 'skip') return undefined;
  return { change, idempotent: mode === 'idempotent' };
}
