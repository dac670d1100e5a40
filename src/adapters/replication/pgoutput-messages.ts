// The messages every replayed transaction is made of, decoded straight from the message buffer: Begin and
// Commit with their positions as numbers, and the row messages (Insert, Update, Delete) with every value kept
// as its text form. pg-logical-replication parses the rest (Relation, Truncate, Type, Origin …). Its parser
// formats every position as a string (which the replay parsed back) and copies each value into a buffer of
// its own before decoding it: together about a third of the replay's CPU time.
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html (protocol version 1)
import type { Row } from '../../core/changes';
import type { Lsn } from '../../core/lsn';

/** What a row message needs of its Relation message (as pg-logical-replication returns it). */
export interface RelationInfo {
  relationOid: number;
  schema: string;
  name: string;
  columns: readonly { name: string }[];
  /** Columns of the replica identity (flag 1 of each column). */
  keyColumns: readonly string[];
  /** false when a column is named `__proto__`: its rows then get no prototype at all. */
  plainRows?: boolean;
}

export type RowMessage =
  | { tag: 'insert'; relation: RelationInfo; new: Row }
  | { tag: 'update'; relation: RelationInfo; key: Row | null; old: Row | null; new: Row }
  | { tag: 'delete'; relation: RelationInfo; key: Row | null; old: Row | null };

export interface BeginMessage {
  tag: 'begin';
  /** The commit record's position (the final LSN of the transaction). */
  commitLsn: Lsn;
  /** Commit time in microseconds since the Unix epoch. */
  commitTimeUs: bigint;
  xid: number;
}

export interface CommitMessage {
  tag: 'commit';
  commitLsn: Lsn;
  /** Where the transaction ends: the position to acknowledge once it is applied. */
  endLsn: Lsn;
  commitTimeUs: bigint;
}

/** PostgreSQL's epoch (2000-01-01) in microseconds since the Unix epoch. */
const POSTGRES_EPOCH_US = 946_684_800_000_000n;

const BEGIN = 0x42; // 'B'
const COMMIT = 0x43; // 'C'
const INSERT = 0x49; // 'I'
const UPDATE = 0x55; // 'U'
const DELETE = 0x44; // 'D'
const KEY = 0x4b; // 'K': the old replica identity key
const OLD = 0x4f; // 'O': the whole old row (REPLICA IDENTITY FULL)
const NEW = 0x4e; // 'N'

/** Whether `buffer` holds a message this module decodes. */
export const isDecodedHere = (buffer: Buffer): boolean => {
  const tag = buffer[0];
  return tag === INSERT || tag === UPDATE || tag === DELETE || tag === BEGIN || tag === COMMIT;
};

/**
 * Decodes a message for which isDecodedHere is true. Begin: Int64 final LSN, Int64 commit time, Int32 xid.
 * Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time.
 */
export function parseMessage(
  buffer: Buffer,
  relations: ReadonlyMap<number, RelationInfo>,
): BeginMessage | CommitMessage | RowMessage {
  if (buffer[0] === BEGIN) {
    return {
      tag: 'begin',
      commitLsn: buffer.readBigUInt64BE(1) as Lsn,
      commitTimeUs: buffer.readBigInt64BE(9) + POSTGRES_EPOCH_US,
      xid: buffer.readUInt32BE(17),
    };
  }
  if (buffer[0] === COMMIT) {
    return {
      tag: 'commit',
      commitLsn: buffer.readBigUInt64BE(2) as Lsn,
      endLsn: buffer.readBigUInt64BE(10) as Lsn,
      commitTimeUs: buffer.readBigInt64BE(18) + POSTGRES_EPOCH_US,
    };
  }
  return parseRowMessage(buffer, relations);
}

/** Reads TupleData at `at`; returns the row and where the next field starts. */
function readTuple(buffer: Buffer, at: number, relation: RelationInfo, fallback: Row | null): [Row, number] {
  const count = buffer.readUInt16BE(at);
  let p = at + 2;
  // A plain object (fast properties, shared shapes) unless a column name would touch the prototype.
  const row: Row = relation.plainRows === false ? Object.create(null) : {};
  for (let i = 0; i < count; i++) {
    const name = (relation.columns[i] as { name: string }).name;
    const kind = buffer[p];
    p += 1;
    if (kind === 0x74) {
      // 't': Int32 length, then the value's text form.
      const length = buffer.readInt32BE(p);
      p += 4;
      row[name] = buffer.toString('utf8', p, p + length);
      p += length;
    } else if (kind === 0x6e) {
      row[name] = null; // 'n'
    } else if (kind === 0x75) {
      // 'u': an unchanged TOASTed value; the old row has it when the identity is FULL, else it stays undefined.
      row[name] = fallback ? fallback[name] : undefined;
    } else {
      // 'b' (binary) is only sent when asked for, which the replay never does.
      throw new Error(
        `pgoutput: unexpected column kind ${String(kind)} in a row of ${relation.schema}.${relation.name}`,
      );
    }
  }
  return [row, p];
}

/** The replica identity key of a 'K' tuple: only its key columns (the others are sent as NULL). */
function keyOf(tuple: Row, relation: RelationInfo): Row {
  const key: Row = Object.create(null);
  for (const column of relation.keyColumns) key[column] = tuple[column] ?? undefined;
  return key;
}

/** Decodes an Insert, Update or Delete message; the relation must have been announced before. */
function parseRowMessage(buffer: Buffer, relations: ReadonlyMap<number, RelationInfo>): RowMessage {
  const tag = buffer[0];
  const oid = buffer.readUInt32BE(1);
  const relation = relations.get(oid);
  if (!relation) throw new Error(`pgoutput: a row message for relation ${oid} before its Relation message`);
  let p = 5;
  if (tag === INSERT) {
    if (buffer[p] !== NEW)
      throw new Error(`pgoutput: unexpected submessage in an Insert of ${relation.name}`);
    return { tag: 'insert', relation, new: readTuple(buffer, p + 1, relation, null)[0] };
  }
  let key: Row | null = null;
  let old: Row | null = null;
  const sub = buffer[p];
  if (sub === KEY || sub === OLD) {
    const [tuple, next] = readTuple(buffer, p + 1, relation, null);
    if (sub === KEY) key = keyOf(tuple, relation);
    else old = tuple;
    p = next;
  }
  if (tag === DELETE) return { tag: 'delete', relation, key, old };
  if (buffer[p] !== NEW) throw new Error(`pgoutput: unexpected submessage in an Update of ${relation.name}`);
  return { tag: 'update', relation, key, old, new: readTuple(buffer, p + 1, relation, old)[0] };
}
