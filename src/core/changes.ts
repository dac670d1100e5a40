// Row changes as the replay sees them: decoded from pgoutput with every value kept as the source's text
// form (no Date parsing: microseconds and time zones survive), or spooled on the target as JSON.

/** A column value: the text form, null for SQL NULL, undefined for an unchanged TOASTed value. */
export type ColumnValue = string | null | undefined;
export type Row = Record<string, ColumnValue>;

export interface RelationRef {
  schema: string;
  name: string;
  /**
   * A TimescaleDB hypertable (statements reach its chunks, no ONLY): named as itself ('hypertable') or as
   * the destination of one of its chunks' changes ('chunk').
   */
  via?: 'hypertable' | 'chunk';
  /** For 'chunk': the source chunk the change was made in (copy parts and their refresh rules are per chunk). */
  chunk?: { schema: string; name: string };
}

export interface RelationDef extends RelationRef {
  oid: number;
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  columns: { name: string; typeOid: number; isKey: boolean }[];
}

/**
 * A row already in COPY's text format (tab-separated, escaped, newline-terminated) in `buffer` from `start` to
 * `end`, its values in `columns` order. The bytes are never overwritten: a COPY can send them as they are.
 */
export interface CopyRow {
  buffer: Buffer;
  start: number;
  end: number;
  columns: readonly string[];
}

export type Change =
  /** `copy`: the same row as a COPY line (a replayed insert); `values` may then be decoded on first read. */
  | { kind: 'insert'; rel: RelationRef; values: Row; copy?: CopyRow }
  | { kind: 'update'; rel: RelationRef; key: Row | null; old: Row | null; values: Row }
  | { kind: 'delete'; rel: RelationRef; key: Row | null; old: Row | null }
  | { kind: 'truncate'; rels: RelationRef[]; cascade: boolean; restartIdentity: boolean };

/** Changes of one source transaction, in order, framed by its commit positions. */
export interface TxnFrame {
  /** LSN of the commit record (pgoutput Begin.final_lsn). */
  commitLsn: bigint;
  /** End of the commit record: the position acknowledged once the transaction is durable on the target. */
  endLsn: bigint;
  /** Commit time, microseconds since the Unix epoch. */
  commitTimeUs: bigint;
}

export const relKey = (rel: RelationRef): string => `${rel.schema}\u0000${rel.name}`;
