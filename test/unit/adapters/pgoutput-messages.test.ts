// The Begin, Commit and row messages decoded by the replay itself, built byte for byte as the protocol
// documentation describes them (protocol version 1).
import { describe, expect, it } from 'vitest';
import {
  CopyArena,
  decodeCopyRow,
  isDecodedHere,
  parseMessage,
  type RelationInfo,
} from '../../../src/adapters/replication/pgoutput-messages';
import type { CopyRow, Row } from '../../../src/core/changes';

const relation: RelationInfo = {
  relationOid: 16384,
  schema: 'Mixed Case',
  name: 'docs',
  columns: [{ name: 'id' }, { name: 'body' }, { name: 'note' }],
  keyColumns: ['id'],
};
const relations = new Map([[relation.relationOid, relation]]);

const int8 = (n: number) => Buffer.from([n]);
const int16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const int64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const byte = (c: string) => Buffer.from(c, 'latin1');
/** TupleData: 't' text values, null as 'n', undefined as 'u' (unchanged TOAST). */
const tuple = (values: (string | null | undefined)[]) =>
  Buffer.concat([
    int16(values.length),
    ...values.map((v) => {
      if (v === null) return byte('n');
      if (v === undefined) return byte('u');
      const text = Buffer.from(v, 'utf8');
      return Buffer.concat([byte('t'), int32(text.length), text]);
    }),
  ]);

describe('pgoutput messages decoded by the replay', () => {
  it('reads Begin and Commit positions and times as numbers', () => {
    // 2024-01-01 00:00:00.000001 UTC in microseconds since 2000-01-01.
    const pgTime = 757_382_400_000_001n;
    const begin = Buffer.concat([byte('B'), int64(0x1_0000_00a0n), int64(pgTime), int32(4_000_000_000)]);
    expect(isDecodedHere(begin)).toBe(true);
    expect(parseMessage(begin, relations)).toEqual({
      tag: 'begin',
      commitLsn: 0x1_0000_00a0n,
      commitTimeUs: 1_704_067_200_000_001n,
      xid: 4_000_000_000,
    });
    const commit = Buffer.concat([
      byte('C'),
      int8(0),
      int64(0x1_0000_00a0n),
      int64(0x1_0000_00d8n),
      int64(pgTime),
    ]);
    expect(parseMessage(commit, relations)).toEqual({
      tag: 'commit',
      commitLsn: 0x1_0000_00a0n,
      endLsn: 0x1_0000_00d8n,
      commitTimeUs: 1_704_067_200_000_001n,
    });
  });

  it('keeps values as their text forms, multi-byte UTF-8 and NULL included', () => {
    const insert = Buffer.concat([byte('I'), int32(16384), byte('N'), tuple(['7', 'ü ✓ 😀\ttab', null])]);
    expect(parseMessage(insert, relations)).toEqual({
      tag: 'insert',
      relation,
      new: { id: '7', body: 'ü ✓ 😀\ttab', note: null },
    });
  });

  it('reads an Update with the old key (K), leaving unchanged TOAST out, and one with the old row (O)', () => {
    const withKey = Buffer.concat([
      byte('U'),
      int32(16384),
      byte('K'),
      tuple(['7', null, null]),
      byte('N'),
      tuple(['8', undefined, 'n']),
    ]);
    const parsed = parseMessage(withKey, relations);
    expect(parsed).toMatchObject({ tag: 'update', key: { id: '7' }, old: null });
    expect(Object.keys((parsed as { key: object }).key)).toEqual(['id']);
    // No prototype: a column missing from the key finds nothing, whatever its name.
    expect(Object.getPrototypeOf((parsed as { key: object }).key)).toBeNull();
    expect((parsed as { new: Record<string, unknown> }).new).toEqual({ id: '8', body: undefined, note: 'n' });

    // REPLICA IDENTITY FULL: an unchanged TOASTed value is taken from the old row.
    const withOld = Buffer.concat([
      byte('U'),
      int32(16384),
      byte('O'),
      tuple(['7', 'long body', 'a']),
      byte('N'),
      tuple(['7', undefined, 'b']),
    ]);
    expect(parseMessage(withOld, relations)).toMatchObject({
      tag: 'update',
      key: null,
      old: { id: '7', body: 'long body', note: 'a' },
      new: { id: '7', body: 'long body', note: 'b' },
    });
    // No old tuple at all: only the new row.
    const plain = Buffer.concat([byte('U'), int32(16384), byte('N'), tuple(['9', 'x', null])]);
    expect(parseMessage(plain, relations)).toMatchObject({ key: null, old: null, new: { id: '9' } });
  });

  it('gives a row with a column named __proto__ no prototype, so the value is an ordinary property', () => {
    const odd: RelationInfo = {
      ...relation,
      relationOid: 16385,
      columns: [{ name: 'id' }, { name: '__proto__' }],
      plainRows: false,
    };
    const message = Buffer.concat([byte('I'), int32(16385), byte('N'), tuple(['1', 'value'])]);
    const row = (parseMessage(message, new Map([[16385, odd]])) as { new: Record<string, unknown> }).new;
    expect(Object.getPrototypeOf(row)).toBeNull();
    expect(Object.keys(row)).toEqual(['id', '__proto__']);
    expect(Object.getOwnPropertyDescriptor(row, '__proto__')?.value).toBe('value');
  });

  it('reads a Delete by key or by old row, and refuses a row of an unannounced relation', () => {
    const byKey = Buffer.concat([byte('D'), int32(16384), byte('K'), tuple(['7', null, null])]);
    expect(parseMessage(byKey, relations)).toEqual({ tag: 'delete', relation, key: { id: '7' }, old: null });
    const byOld = Buffer.concat([byte('D'), int32(16384), byte('O'), tuple(['7', 'b', null])]);
    expect(parseMessage(byOld, relations)).toMatchObject({
      key: null,
      old: { id: '7', body: 'b', note: null },
    });
    const unknown = Buffer.concat([byte('I'), int32(99), byte('N'), tuple(['1', null, null])]);
    expect(() => parseMessage(unknown, relations)).toThrow(/relation 99 before its Relation message/);
    expect(isDecodedHere(byte('R'))).toBe(false);
  });

  it('keeps an Insert as a COPY line: text forms escaped for COPY, NULL as \\N, values decoded back on demand', () => {
    const arena = new CopyArena();
    const hostile = ['a\\b\tc\nd\re', '\\N', null];
    const insert = Buffer.concat([byte('I'), int32(16384), byte('N'), tuple(hostile)]);
    const parsed = parseMessage(insert, relations, arena) as unknown as { copy: CopyRow; new: Row };
    const { copy } = parsed;
    expect(copy.buffer.toString('utf8', copy.start, copy.end)).toBe('a\\\\b\\tc\\nd\\re\t\\\\N\t\\N\n');
    expect(copy.columns).toEqual(['id', 'body', 'note']);
    expect(parsed.new).toEqual({ id: hostile[0], body: hostile[1], note: null });
    expect(parseMessage(insert, relations)).toEqual({
      tag: 'insert',
      relation,
      new: { id: hostile[0], body: hostile[1], note: null },
    });

    // Multi-byte UTF-8 and the empty string survive the round trip; lines follow each other in the block.
    const second = parseMessage(
      Buffer.concat([byte('I'), int32(16384), byte('N'), tuple(['ü ✓ 😀', '', 'x'])]),
      relations,
      arena,
    ) as unknown as { copy: CopyRow };
    expect(second.copy.buffer).toBe(copy.buffer);
    expect(second.copy.start).toBe(copy.end);
    expect(decodeCopyRow(second.copy, relation)).toEqual({ id: 'ü ✓ 😀', body: '', note: 'x' });
    // A row larger than the rest of the block starts a new one; the earlier lines are left as they were.
    const big = 'z'.repeat(2 * 1024 * 1024);
    const third = parseMessage(
      Buffer.concat([byte('I'), int32(16384), byte('N'), tuple(['1', big, null])]),
      relations,
      arena,
    ) as unknown as { copy: CopyRow };
    expect(third.copy.buffer).not.toBe(copy.buffer);
    // Its block is exactly its line, not twice the message.
    expect(third.copy.buffer.length).toBe(third.copy.end - third.copy.start);
    expect(third.copy.end - third.copy.start).toBe(1 + 1 + big.length + 1 + 2 + 1);
    expect(decodeCopyRow(third.copy, relation).body).toBe(big);
    expect(decodeCopyRow(copy, relation)).toEqual({ id: hostile[0], body: hostile[1], note: null });
  });

  it('decodes an Insert it cannot keep as a line (a column count that differs from the relation)', () => {
    const short = Buffer.concat([byte('I'), int32(16384), byte('N'), tuple(['1', 'b'])]);
    const parsed = parseMessage(short, relations, new CopyArena()) as { copy?: unknown; new: object };
    expect(parsed.copy).toBeUndefined();
    expect(parsed.new).toEqual({ id: '1', body: 'b' });
  });
});
