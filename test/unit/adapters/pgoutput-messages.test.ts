// The Begin, Commit and row messages decoded by the replay itself, built byte for byte as the protocol
// documentation describes them (protocol version 1).
import { describe, expect, it } from 'vitest';
import {
  isDecodedHere,
  parseMessage,
  type RelationInfo,
} from '../../../src/adapters/replication/pgoutput-messages';

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
});
