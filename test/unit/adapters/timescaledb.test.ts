// The bounds the cutover refreshes continuous aggregates from: the earliest time each hypertable's replayed
// changes reached, in the text forms the replay sees. Pure: no database.
import { describe, expect, it } from 'vitest';
import { type TimescaleLayout, TouchedRanges } from '../../../src/adapters/postgres/timescaledb';
import type { Change, RelationRef } from '../../../src/core/changes';

const dimension = (column: string, columnType: string) => ({
  column,
  columnType,
  kind: 'range' as const,
  intervalLength: '86400000000',
  slices: null,
  partitioningFunc: null,
  integerNowFunc: null,
});
const layout: TimescaleLayout = {
  version: '2.28.3',
  api: 'public',
  hypertables: [
    {
      id: 1,
      schema: 'public',
      name: 'metrics',
      dimensions: [dimension('time', 'timestamp with time zone')],
      compression: null,
    },
    { id: 2, schema: 'public', name: 'counters', dimensions: [dimension('n', 'bigint')], compression: null },
  ],
  continuousAggregates: [],
  jobs: [],
  chunkSchemas: ['_timescaledb_internal'],
  chunksInUserSchemas: [],
};
const metrics: RelationRef = { schema: 'public', name: 'metrics', via: 'chunk' };
const counters: RelationRef = { schema: 'public', name: 'counters', via: 'chunk' };
const M = 'public\u0000metrics';
const C = 'public\u0000counters';

describe('TouchedRanges', () => {
  it('keeps the earliest time of inserts, updates (new and old key) and deletes', () => {
    const t = new TouchedRanges(layout);
    expect(t.bound(M)).toBeUndefined();
    const changes: Change[] = [
      { kind: 'insert', rel: metrics, values: { time: '2026-11-20 10:00:00+00' } },
      { kind: 'insert', rel: metrics, values: { time: '2026-11-20 09:59:59.5+00' } },
      {
        kind: 'update',
        rel: metrics,
        key: { time: '2026-11-19 23:00:00+00' },
        old: null,
        values: { time: '2026-11-21 00:00:00+00' },
      },
      { kind: 'delete', rel: metrics, key: null, old: { time: '2026-11-20 01:00:00+00' } },
    ];
    for (const c of changes) t.note(c);
    expect(t.bound(M)).toBe('2026-11-19 23:00:00+00');
    // A plain table's changes (not routed to a hypertable) do not count.
    t.note({
      kind: 'insert',
      rel: { schema: 'public', name: 'metrics' },
      values: { time: '2000-01-01 00:00:00+00' },
    });
    expect(t.bound(M)).toBe('2026-11-19 23:00:00+00');
  });

  it('compares integer dimensions as numbers, and a TRUNCATE of the hypertable means everything', () => {
    const t = new TouchedRanges(layout);
    t.note({ kind: 'insert', rel: counters, values: { n: '900' } });
    t.note({ kind: 'insert', rel: counters, values: { n: '1000' } });
    expect(t.bound(C)).toBe('900');
    t.lowerTo({ schema: 'public', name: 'counters' }, '10000', true);
    expect(t.bound(C)).toBe('900');
    t.note({
      kind: 'truncate',
      rels: [{ schema: 'public', name: 'metrics', via: 'hypertable' }],
      cascade: false,
      restartIdentity: false,
    });
    expect(t.bound(M)).toBeNull();
    t.note({ kind: 'insert', rel: metrics, values: { time: '2026-01-01 00:00:00+00' } });
    expect(t.bound(M)).toBeNull();
  });
});
