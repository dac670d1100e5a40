// The messages every replayed transaction is made of, decoded straight from the message buffer: Begin and
// Commit with their positions as numbers, and the row messages (Insert, Update, Delete) with every value kept
// as its text form. pg-logical-replication parses the rest (Relation, Truncate, Type, Origin …). Its parser
// formats every position as a string (which the replay parsed back) and copies each value into a buffer of
// its own before decoding it: together about a third of the replay's CPU time.
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html (protocol version 1)
import type { CopyRow, Row } from '../../core/changes';
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
  /** `copy`: the row as a COPY line, when the parse was given a CopyArena (`new` is then decoded from it). */
  | { tag: 'insert'; relation: RelationInfo; new: Row; copy?: CopyRow }
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

/** Whether `buffer` holds a message this module decodes (at `base`). */
export const isDecodedHere = (buffer: Buffer, base = 0): boolean => {
  const tag = buffer[base];
  return tag === INSERT || tag === UPDATE || tag === DELETE || tag === BEGIN || tag === COMMIT;
};

/**
 * Decodes a message for which isDecodedHere is true. Begin: Int64 final LSN, Int64 commit time, Int32 xid.
 * Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time.
 */
export function parseMessage(
  buffer: Buffer,
  relations: ReadonlyMap<number, RelationInfo>,
  arena?: CopyArena,
  /** Where the message starts in `buffer` (after the XLogData header, when read straight from the stream). */
  base = 0,
): BeginMessage | CommitMessage | RowMessage {
  if (buffer[base] === BEGIN) {
    return {
      tag: 'begin',
      commitLsn: buffer.readBigUInt64BE(base + 1) as Lsn,
      commitTimeUs: buffer.readBigInt64BE(base + 9) + POSTGRES_EPOCH_US,
      xid: buffer.readUInt32BE(base + 17),
    };
  }
  if (buffer[base] === COMMIT) {
    return {
      tag: 'commit',
      commitLsn: buffer.readBigUInt64BE(base + 2) as Lsn,
      endLsn: buffer.readBigUInt64BE(base + 10) as Lsn,
      commitTimeUs: buffer.readBigInt64BE(base + 18) + POSTGRES_EPOCH_US,
    };
  }
  return parseRowMessage(buffer, relations, arena, base);
}

/** Where the TupleData last read by readTuple ended. */
let tupleEnd = 0;

/**
 * What the hot path needs of a Relation message, derived once per message: its column names (one shared
 * array: COPY column lists compare by identity first) and which of them are in the replica identity.
 */
interface Layout {
  names: readonly string[];
  isKey: readonly boolean[];
}
const layouts = new WeakMap<RelationInfo, Layout>();
const layoutOf = (relation: RelationInfo): Layout => {
  let layout = layouts.get(relation);
  if (!layout) {
    layout = {
      names: relation.columns.map((column) => column.name),
      isKey: relation.columns.map((column) => relation.keyColumns.includes(column.name)),
    };
    layouts.set(relation, layout);
  }
  return layout;
};

/**
 * Reads TupleData at `at` (its end goes to tupleEnd). `keyOnly`: a 'K' tuple, of which only the replica
 * identity's columns are kept (the others are sent as NULL).
 */
function readTuple(
  buffer: Buffer,
  at: number,
  relation: RelationInfo,
  fallback: Row | null,
  keyOnly = false,
): Row {
  const count = buffer.readUInt16BE(at);
  const keys = keyOnly ? layoutOf(relation).isKey : undefined;
  let p = at + 2;
  // A plain object (fast properties, shared shapes) unless a column name would touch the prototype. A key
  // has no prototype: a lookup of a column it lacks must find nothing, whatever the column's name.
  const row: Row = keyOnly || relation.plainRows === false ? Object.create(null) : {};
  for (let i = 0; i < count; i++) {
    const name = (relation.columns[i] as { name: string }).name;
    const kind = buffer[p];
    p += 1;
    if (kind === 0x74) {
      // 't': Int32 length, then the value's text form.
      const length = buffer.readInt32BE(p);
      p += 4;
      if (!keys || keys[i]) row[name] = buffer.toString('utf8', p, p + length);
      p += length;
    } else if (kind === 0x6e) {
      if (!keys || keys[i]) row[name] = keys ? undefined : null; // 'n'
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
  tupleEnd = p;
  return row;
}

/** Decodes an Insert, Update or Delete message; the relation must have been announced before. */
function parseRowMessage(
  buffer: Buffer,
  relations: ReadonlyMap<number, RelationInfo>,
  arena: CopyArena | undefined,
  base: number,
): RowMessage {
  const tag = buffer[base];
  const oid = buffer.readUInt32BE(base + 1);
  const relation = relations.get(oid);
  if (!relation) throw new Error(`pgoutput: a row message for relation ${oid} before its Relation message`);
  let p = base + 5;
  if (tag === INSERT) {
    if (buffer[p] !== NEW)
      throw new Error(`pgoutput: unexpected submessage in an Insert of ${relation.name}`);
    const copy = arena?.append(buffer, p + 1, relation);
    if (copy) return new EncodedInsertMessage(relation, copy);
    return { tag: 'insert', relation, new: readTuple(buffer, p + 1, relation, null) };
  }
  let key: Row | null = null;
  let old: Row | null = null;
  const sub = buffer[p];
  if (sub === KEY || sub === OLD) {
    if (sub === KEY) key = readTuple(buffer, p + 1, relation, null, true);
    else old = readTuple(buffer, p + 1, relation, null);
    p = tupleEnd;
  }
  if (tag === DELETE) return { tag: 'delete', relation, key, old };
  if (buffer[p] !== NEW) throw new Error(`pgoutput: unexpected submessage in an Update of ${relation.name}`);
  return { tag: 'update', relation, key, old, new: readTuple(buffer, p + 1, relation, old) };
}

/**
 * An Insert kept as its COPY line: the replay writes runs of inserts to the target with COPY, so most rows
 * are never turned into strings and objects; `new` decodes the line only when something reads the values.
 */
class EncodedInsertMessage {
  readonly tag = 'insert' as const;
  #row: Row | undefined;
  constructor(
    readonly relation: RelationInfo,
    readonly copy: CopyRow,
  ) {}
  get new(): Row {
    this.#row ??= decodeCopyRow(this.copy, this.relation);
    return this.#row;
  }
}

/** Whether COPY's text format escapes this byte: backslash, tab, newline, carriage return. */
const escaped = (b: number): boolean => b === 0x5c || b === 0x09 || b === 0x0a || b === 0x0d;

/** At most this many bytes of COPY line: every byte escaped (two bytes), a separator or newline per column. */
const worstLineSize = (buffer: Buffer, at: number, count: number): number =>
  2 * (buffer.length - at) + count + 1;

/** Bytes of COPY lines per arena block: a run of a few thousand small rows shares one block. */
const ARENA_BLOCK = 1024 * 1024;

/**
 * Append-only blocks that Insert tuples are transcoded into, straight from the message bytes: pgoutput's text
 * values become COPY's text format (the same text forms; backslash, tab, newline and carriage return escaped,
 * NULL as \N, tab-separated, newline-terminated). A block is never written twice, so a COPY can send a slice
 * of it while later rows are appended; the message buffer itself belongs to node-postgres, which reuses it.
 */
export class CopyArena {
  #block = Buffer.allocUnsafe(0);
  #used = 0;

  /** The row at `at` (TupleData) as a COPY line, or undefined when it holds anything but text and NULL. */
  append(buffer: Buffer, at: number, relation: RelationInfo): CopyRow | undefined {
    const count = buffer.readUInt16BE(at);
    if (count !== relation.columns.length) return undefined;
    const worst = worstLineSize(buffer, at, count);
    if (this.#used + worst > this.#block.length) {
      // A row larger than a block gets a block of exactly its size (the next row starts a new one).
      this.#block = Buffer.allocUnsafe(worst > ARENA_BLOCK ? copyLineSize(buffer, at, count) : ARENA_BLOCK);
      this.#used = 0;
    }
    const out = this.#block;
    const start = this.#used;
    let o = start;
    let p = at + 2;
    for (let i = 0; i < count; i++) {
      if (i > 0) out[o++] = 0x09;
      const kind = buffer[p++];
      if (kind === 0x74) {
        // 't': Int32 length, then the text form.
        const end = p + 4 + buffer.readInt32BE(p);
        p += 4;
        for (; p < end; p++) {
          const b = buffer[p] as number;
          if (escaped(b)) {
            out[o++] = 0x5c;
            out[o++] = b === 0x5c ? 0x5c : b === 0x09 ? 0x74 : b === 0x0a ? 0x6e : 0x72;
          } else out[o++] = b;
        }
      } else if (kind === 0x6e) {
        // 'n': NULL.
        out[o++] = 0x5c;
        out[o++] = 0x4e;
      } else {
        // 'u' (unchanged TOAST) cannot be written by COPY; 'b' is never asked for. The caller decodes instead.
        return undefined;
      }
    }
    out[o++] = 0x0a;
    this.#used = o;
    return { buffer: out, start, end: o, columns: layoutOf(relation).names };
  }
}

/** The exact size of the COPY line for the TupleData at `at` (an upper bound if it holds other than 't'/'n'). */
function copyLineSize(buffer: Buffer, at: number, count: number): number {
  let size = Math.max(count, 1); // the separators and the newline
  let p = at + 2;
  for (let i = 0; i < count; i++) {
    const kind = buffer[p++];
    if (kind === 0x6e) size += 2;
    else if (kind === 0x74) {
      const end = p + 4 + buffer.readInt32BE(p);
      p += 4;
      size += end - p;
      for (; p < end; p++) {
        const b = buffer[p];
        if (escaped(b as number)) size += 1;
      }
    } else return worstLineSize(buffer, at, count);
  }
  return size;
}

/** The values of a COPY line written by CopyArena, as text (null for \\N). */
export function decodeCopyRow(copy: CopyRow, relation: RelationInfo): Row {
  const row: Row = relation.plainRows === false ? Object.create(null) : {};
  const { buffer } = copy;
  const last = copy.end - 1; // the newline
  let p = copy.start;
  for (const name of copy.columns) {
    // The field ends at the next tab (escaped tabs are \t) or at the newline; note whether it has escapes.
    let end = p;
    let escaped = false;
    for (; end < last; end++) {
      const b = buffer[end];
      if (b === 0x09) break;
      if (b === 0x5c) escaped = true;
    }
    if (end - p === 2 && buffer[p] === 0x5c && buffer[p + 1] === 0x4e) row[name] = null;
    else {
      if (!escaped) row[name] = buffer.toString('utf8', p, end);
      else {
        const bytes: number[] = [];
        for (let i = p; i < end; i++) {
          const b = buffer[i] as number;
          if (b !== 0x5c) bytes.push(b);
          else {
            const e = buffer[++i];
            bytes.push(e === 0x74 ? 0x09 : e === 0x6e ? 0x0a : e === 0x72 ? 0x0d : 0x5c);
          }
        }
        row[name] = Buffer.from(bytes).toString('utf8');
      }
    }
    p = end + 1;
  }
  return row;
}
