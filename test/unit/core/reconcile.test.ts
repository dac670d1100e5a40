import { describe, expect, it } from 'vitest';
import type { Change } from '../../../src/core/changes';
import type { Lsn } from '../../../src/core/lsn';
import { type RefreshRules, reconcile } from '../../../src/core/reconcile';

const lsn = (n: number) => BigInt(n) as Lsn;
const rules: RefreshRules = new Map([
  ['public\u0000whole', { lsn: lsn(100), mode: 'skip' }],
  ['public\u0000mixed', { lsn: lsn(100), mode: 'idempotent' }],
]);
const insert = (name: string): Change => ({
  kind: 'insert',
  rel: { schema: 'public', name },
  values: { id: '1' },
});

describe('reconcile', () => {
  it('drops earlier changes of tables copied wholly from the fresh snapshot', () => {
    expect(reconcile(insert('whole'), lsn(99), rules)).toBeUndefined();
  });

  it('applies earlier changes of tables mixing both snapshots idempotently', () => {
    expect(reconcile(insert('mixed'), lsn(50), rules)).toEqual({ change: insert('mixed'), idempotent: true });
  });

  it('applies changes at or after the fresh snapshot, and of other tables, normally', () => {
    expect(reconcile(insert('whole'), lsn(100), rules)).toEqual({
      change: insert('whole'),
      idempotent: false,
    });
    expect(reconcile(insert('mixed'), lsn(150), rules)).toEqual({
      change: insert('mixed'),
      idempotent: false,
    });
    expect(reconcile(insert('other'), lsn(1), rules)).toEqual({ change: insert('other'), idempotent: false });
  });

  it("follows a TimescaleDB chunk's own rule, not its hypertable's", () => {
    const chunkRules: RefreshRules = new Map([
      ['_timescaledb_internal\u0000_hyper_1_2_chunk', { lsn: lsn(100), mode: 'skip' }],
    ]);
    const inChunk = (name: string): Change => ({
      kind: 'insert',
      rel: {
        schema: 'public',
        name: 'metrics',
        via: 'chunk',
        chunk: { schema: '_timescaledb_internal', name },
      },
      values: { id: '1' },
    });
    // Copied at the fresh snapshot: its earlier changes are in the copy already.
    expect(reconcile(inChunk('_hyper_1_2_chunk'), lsn(99), chunkRules)).toBeUndefined();
    // Another chunk of the same hypertable, copied in the first snapshot: applied.
    expect(reconcile(inChunk('_hyper_1_3_chunk'), lsn(99), chunkRules)).toEqual({
      change: inChunk('_hyper_1_3_chunk'),
      idempotent: false,
    });
  });

  it('keeps only the truncated tables that are not skipped', () => {
    const truncate: Change = {
      kind: 'truncate',
      rels: [
        { schema: 'public', name: 'whole' },
        { schema: 'public', name: 'mixed' },
      ],
      cascade: false,
      restartIdentity: true,
    };
    expect(reconcile(truncate, lsn(10), rules)).toEqual({
      change: { ...truncate, rels: [{ schema: 'public', name: 'mixed' }] },
      idempotent: true,
    });
    expect(
      reconcile({ ...truncate, rels: [{ schema: 'public', name: 'whole' }] }, lsn(10), rules),
    ).toBeUndefined();
  });
});
