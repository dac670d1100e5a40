import { describe, expect, it } from 'vitest';
import {
  type BucketDigest,
  buildTableValidation,
  buildValidationReport,
  compareCodePoints,
  diffBuckets,
  diffRowStreams,
  type RowDigest,
} from '../../src/core/validation';

async function* stream(
  rows: RowDigest[],
  seen?: { closed: boolean; read: number },
): AsyncGenerator<RowDigest> {
  try {
    for (const row of rows) {
      if (seen) seen.read += 1;
      yield row;
    }
  } finally {
    if (seen) seen.closed = true;
  }
}

const row = (key: string, hash = `h-${key}`): RowDigest => ({ key, hash, label: key });

describe('diffBuckets', () => {
  it('finds no mismatch when every bucket has the same count and sum', () => {
    const digests: BucketDigest[] = [
      { bucket: 0, rows: 3, sum: '-123' },
      { bucket: 5, rows: 1, sum: '98765432109876543210' },
    ];
    expect(diffBuckets(digests, [...digests].reverse())).toEqual([]);
  });

  it('names buckets whose sums differ even when the counts agree', () => {
    expect(
      diffBuckets(
        [
          { bucket: 1, rows: 2, sum: '10' },
          { bucket: 2, rows: 2, sum: '20' },
        ],
        [
          { bucket: 1, rows: 2, sum: '10' },
          { bucket: 2, rows: 2, sum: '21' },
        ],
      ),
    ).toEqual([2]);
  });

  it('treats a bucket present on one side only as empty on the other', () => {
    expect(diffBuckets([{ bucket: 7, rows: 1, sum: '5' }], [])).toEqual([7]);
    expect(diffBuckets([], [{ bucket: 3, rows: 1, sum: '0' }])).toEqual([3]);
  });

  it('compares 64-bit sums beyond Number precision exactly', () => {
    expect(
      diffBuckets(
        [{ bucket: 0, rows: 2, sum: '18446744073709551616' }],
        [{ bucket: 0, rows: 2, sum: '18446744073709551617' }],
      ),
    ).toEqual([0]);
  });
});

describe('compareCodePoints', () => {
  it('orders as PostgreSQL\'s "C" collation does: by code point, not by UTF-16 unit', () => {
    // U+1F600 (surrogate pair D83D DE00) sorts after U+FFFD in code points, before it in UTF-16 units.
    expect(compareCodePoints('😀', '\uFFFD')).toBe(1);
    expect(compareCodePoints('a', 'b')).toBe(-1);
    expect(compareCodePoints('ab', 'a')).toBe(1);
    expect(compareCodePoints('Z', 'a')).toBe(-1);
    expect(compareCodePoints('same', 'same')).toBe(0);
  });
});

describe('diffRowStreams', () => {
  it('lists keys missing on either side and keys whose contents differ, in key order', async () => {
    const source = [row('1'), row('2'), row('3', 'old'), row('5')];
    const target = [row('1'), row('3', 'new'), row('4'), row('5'), row('6')];
    expect(await diffRowStreams(stream(source), stream(target), 10)).toEqual([
      { key: '2', kind: 'missing-on-target' },
      { key: '3', kind: 'content-differs' },
      { key: '4', kind: 'extra-on-target' },
      { key: '6', kind: 'extra-on-target' },
    ]);
  });

  it('reports nothing for identical streams', async () => {
    const rows = [row('a'), row('b')];
    expect(await diffRowStreams(stream(rows), stream([...rows]), 10)).toEqual([]);
  });

  it('stops reading at the limit and closes both streams', async () => {
    const source = Array.from({ length: 1000 }, (_, i) => row(String(i).padStart(4, '0')));
    const seenSource = { closed: false, read: 0 };
    const seenTarget = { closed: false, read: 0 };
    const differences = await diffRowStreams(stream(source, seenSource), stream([], seenTarget), 3);
    expect(differences.map((d) => d.key)).toEqual(['0000', '0001', '0002']);
    expect(seenSource.read).toBeLessThan(10);
    expect(seenSource.closed).toBe(true);
    expect(seenTarget.closed).toBe(true);
  });

  it('counts duplicate keyless rows: one extra copy on the target is reported once', async () => {
    const source = [row('h1'), row('h2')];
    const target = [row('h1'), row('h1'), row('h2')];
    expect(await diffRowStreams(stream(source), stream(target), 10)).toEqual([
      { key: 'h1', kind: 'extra-on-target' },
    ]);
  });

  it('shows the label, not the sort key, for each difference', async () => {
    const source = [{ key: 'abc123', hash: 'abc123', label: '(1,"a row")' }];
    expect(await diffRowStreams(stream(source), stream([]), 10)).toEqual([
      { key: '(1,"a row")', kind: 'missing-on-target' },
    ]);
  });
});

describe('buildTableValidation', () => {
  const base = { table: 'public.t', schema: 'public', name: 't', keyColumns: ['id'] };

  it('passes a table whose counts and checksums agree', () => {
    const digests = [{ bucket: 0, rows: 2, sum: '9' }];
    const t = buildTableValidation({
      ...base,
      sourceRows: 2,
      targetRows: 2,
      checksum: { buckets: 16, source: digests, target: digests, differences: [] },
    });
    expect(t).toMatchObject({ ok: true, checksumMatch: true });
    expect(t.mismatchedRanges).toBeUndefined();
  });

  it('fails a table with a differing bucket and lists its range and keys', () => {
    const t = buildTableValidation({
      ...base,
      sourceRows: 2,
      targetRows: 2,
      checksum: {
        buckets: 16,
        source: [{ bucket: 4, rows: 2, sum: '9' }],
        target: [{ bucket: 4, rows: 2, sum: '8' }],
        differences: [{ key: '7', kind: 'content-differs' }],
      },
    });
    expect(t).toMatchObject({ ok: false, checksumMatch: false, firstDifferingKeys: ['7'] });
    expect(t.mismatchedRanges).toEqual(['key range 5/16: 2 rows on both sides, contents differ']);
  });

  it('fails a count mismatch in counts-only mode without claiming a checksum result', () => {
    const t = buildTableValidation({ ...base, sourceRows: 3, targetRows: 2 });
    expect(t).toMatchObject({ ok: false, checksumMatch: null });
  });

  it('fails a table missing on the target with a message instead of a count', () => {
    const t = buildTableValidation({
      ...base,
      sourceRows: 3,
      targetRows: null,
      problem: 'missing on the target',
      checksumSkipped: true,
    });
    expect(t).toMatchObject({
      ok: false,
      checksumMatch: false,
      targetRows: null,
      problem: 'missing on the target',
    });
  });

  it('makes the report fail when any table fails', () => {
    const good = buildTableValidation({ ...base, sourceRows: 1, targetRows: 1 });
    const bad = buildTableValidation({ ...base, sourceRows: 1, targetRows: 0 });
    const report = (tables: (typeof good)[]) =>
      buildValidationReport({ sourceMode: 'live', checksum: false, buckets: 16, tables, warnings: [] });
    expect(report([good, good]).ok).toBe(true);
    expect(report([good, bad]).ok).toBe(false);
    expect(report([good]).buckets).toBeNull();
  });
});
