// The replication transport: pg-logical-replication opens the replication connection, starts pgoutput from
// our slot, parses its rarer messages and sends our status updates; we read the stream's messages ourselves
// (values kept as text), answer keepalives, and acknowledge only positions the caller says are durable.
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
import type pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import type { Change, CopyRow, RelationDef, RelationRef, Row } from '../../core/changes';
import { formatLsn, type Lsn } from '../../core/lsn';
import { type ConnInfo, toPgConfig } from '../postgres/connection';
import {
  type BeginMessage,
  type CommitMessage,
  CopyArena,
  isDecodedHere,
  parseMessage,
  type RelationInfo,
} from './pgoutput-messages';

export interface BeginFrame {
  commitLsn: Lsn;
  /** Where the transaction's first change is in the WAL (the XLogData start of a Begin message). */
  firstLsn: Lsn;
  commitTimeUs: bigint;
  xid: number;
}

export interface CommitFrame {
  commitLsn: Lsn;
  endLsn: Lsn;
  commitTimeUs: bigint;
}

export interface StreamHandlers {
  // Each may return nothing when it finished synchronously (most messages only update state or join a buffer).
  begin(frame: BeginFrame): Promise<void> | undefined;
  /**
   * May route the relation: its changes then carry the returned reference instead (a TimescaleDB chunk's go
   * to its hypertable), or, for null, are not handed over at all (TimescaleDB's internal tables).
   */
  relation(rel: RelationDef): Promise<RelationRef | null | undefined>;
  /** `bytes`: the size of the pgoutput message it came in. */
  change(change: Change, bytes: number): Promise<void> | undefined;
  commit(frame: CommitFrame): Promise<void> | undefined;
}

export interface ChangeStream {
  /** Reports `lsn` as written, flushed and applied (only call with positions durable on the target). */
  acknowledge(lsn: Lsn): Promise<void>;
  /**
   * The server's WAL end from its last keepalive, once every data message received before that keepalive
   * has been handled: with nothing pending, it is safe to acknowledge it (an idle source's slot advances).
   */
  idleWalEnd(): Lsn | undefined;
  /** Data messages received but not yet handled (the one being handled included). */
  pending(): number;
  /** Ends the stream with `error` (for failures of work the handlers did not await): `ended` rejects with it. */
  fail(error: Error): void;
  /** Sends a status update for `lsn` (a durable position) and asks the server for a keepalive now. */
  ping(lsn: Lsn): Promise<void>;
  stop(): Promise<void>;
  /** Settles when the stream ends: resolves on stop(), rejects with the connection's error otherwise. */
  readonly ended: Promise<void>;
}

/** Session settings of the walsender, so text forms are canonical whatever the server defaults are. */
const CANONICAL_OPTIONS =
  '-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex -c TimeZone=UTC';

/** TimescaleDB's logical messages around a chunk's compression or decompression (2.x, on by default). */
const TIMESCALE_MARKER_START = /^::timescaledb-(de)?compression-start$/;
const TIMESCALE_MARKER_END = /^::timescaledb-(de)?compression-end$/;

/**
 * Received messages waiting for the handlers, at most this many or this many bytes of pgoutput: above either,
 * the socket is paused until the queue is half empty. The walsender keeps decoding while the target applies,
 * and memory stays bounded.
 */
const QUEUE_MAX_MESSAGES = 2_000;
const QUEUE_MAX_BYTES = 8 * 1024 * 1024;

/** Messages handled synchronously in a row before the consumer lets the event loop poll the sockets. */
const YIELD_EVERY = 256;
/**
 * When the queue runs empty, the socket is left unread this long: the walsender's messages gather in the
 * socket instead of each send waking this process (and costing the walsender the wakeup). On a 1 M-insert
 * backlog that took a quarter of our CPU and a seventh of the walsender's off the drain; it delays a change
 * by at most this much.
 */
const IDLE_READ_DELAY_MS = 1;

type Message = { tag: string } & Record<string, unknown>;

/** pgoutput parser that leaves every value as text. */
class TextPgoutputPlugin extends PgoutputPlugin {
  /** Relation messages by OID, for the row messages decoded here. */
  readonly relations = new Map<number, RelationInfo>();
  /** Where inserts are kept as COPY lines. */
  readonly arena = new CopyArena();
  /** The messages the stream does not decode itself (Relation, Truncate, Type, Origin, logical messages). */
  override parse(buffer: Buffer) {
    const message = super.parse(buffer);
    if (message.tag === 'relation') {
      // The stock parser would convert values with node-postgres type parsers (Dates lose microseconds).
      for (const column of message.columns) column.parser = (raw: unknown) => raw;
      this.relations.set(message.relationOid, {
        ...message,
        plainRows: !message.columns.some((column) => column.name === '__proto__'),
      });
    }
    return message;
  }
}

/** A replayed insert kept as its COPY line; its values are decoded only if something reads them. */
class EncodedInsert {
  readonly kind = 'insert' as const;
  readonly #message: { new: Row };
  constructor(
    readonly rel: RelationRef,
    readonly copy: CopyRow,
    message: { new: Row },
  ) {
    this.#message = message;
  }
  get values(): Row {
    return this.#message.new;
  }
}

/**
 * pg-logical-replication reports `lsn + 1` as written/flushed/applied. The server then skips every
 * transaction whose commit record starts before that position, and the next transaction's commit record
 * can start exactly where the last applied one ended (concurrent transactions commit back to back), so
 * we hand it `lsn - 1`: the server sees exactly the durable end position.
 */
const forLibrary = (lsn: Lsn): string => formatLsn((lsn > 0n ? lsn - 1n : lsn) as Lsn);

export async function openChangeStream(
  info: ConnInfo,
  options: {
    slotName: string;
    publications: string[];
    startLsn: Lsn;
    handlers: StreamHandlers;
    /**
     * The source has TimescaleDB: its compression markers (logical messages) are read, and the row changes
     * between a start and an end marker are skipped. Compressing or decompressing a chunk moves rows between
     * the chunk and TimescaleDB's compressed table; logically nothing changes.
     */
    timescaleMarkers?: boolean;
  },
): Promise<ChangeStream> {
  const config = toPgConfig(info, { options: CANONICAL_OPTIONS } as pg.ClientConfig);
  const service = new LogicalReplicationService(config, {
    acknowledge: { auto: false, timeoutSeconds: 0 },
    // The library's flow control awaits every message's handler (several promises per message) and pauses
    // the socket while it does; we queue messages ourselves and pause the socket only when the queue is full.
    flowControl: { enabled: false },
  });
  const plugin = new TextPgoutputPlugin({
    protoVersion: 1,
    publicationNames: options.publications,
    messages: Boolean(options.timescaleMarkers),
  });
  /** Inside a TimescaleDB (de)compression of the current transaction: its row changes are storage moves. */
  let inMarkers = false;
  let handled = 0;
  let failure: Error | undefined;
  let keepalive: { walEnd: Lsn; upTo: number } | undefined;
  let stopping = false;

  /** One shared {schema, name} per relation: changes of a table carry the same object. */
  const rels = new Map<number, RelationRef>();
  /** What the relation handler routed each relation to (null: dropped). */
  const routes = new Map<number, RelationRef | null>();
  const relOf = (relation: { relationOid: number; schema: string; name: string }): RelationRef | null => {
    const routed = routes.get(relation.relationOid);
    if (routed !== undefined) return routed;
    let rel = rels.get(relation.relationOid);
    if (!rel || rel.schema !== relation.schema || rel.name !== relation.name) {
      rel = { schema: relation.schema, name: relation.name };
      rels.set(relation.relationOid, rel);
    }
    return rel;
  };
  const dispatch = (lsn: Lsn | undefined, message: Message, bytes: number): Promise<void> | undefined => {
    switch (message.tag) {
      case 'begin': {
        inMarkers = false;
        const m = message as unknown as BeginMessage;
        return options.handlers.begin({
          commitLsn: m.commitLsn,
          firstLsn: lsn ?? m.commitLsn,
          commitTimeUs: m.commitTimeUs,
          xid: m.xid,
        });
      }
      case 'commit': {
        const m = message as unknown as CommitMessage;
        return options.handlers.commit({
          commitLsn: m.commitLsn,
          endLsn: m.endLsn,
          commitTimeUs: m.commitTimeUs,
        });
      }
      case 'relation': {
        const m = message as unknown as {
          relationOid: number;
          schema: string;
          name: string;
          replicaIdentity: RelationDef['replicaIdentity'];
          columns: { name: string; typeOid: number; flags: number }[];
        };
        return options.handlers
          .relation({
            oid: m.relationOid,
            schema: m.schema,
            name: m.name,
            replicaIdentity: m.replicaIdentity,
            columns: m.columns.map((c) => ({ name: c.name, typeOid: c.typeOid, isKey: (c.flags & 1) === 1 })),
          })
          .then((route) => {
            if (route === undefined) routes.delete(m.relationOid);
            else routes.set(m.relationOid, route);
          });
      }
      case 'message': {
        const m = message as unknown as { prefix: string; transactional: boolean };
        if (options.timescaleMarkers && m.transactional) {
          if (TIMESCALE_MARKER_START.test(m.prefix)) inMarkers = true;
          else if (TIMESCALE_MARKER_END.test(m.prefix)) inMarkers = false;
        }
        return undefined;
      }
      case 'insert':
      case 'update':
      case 'delete': {
        const m = message as unknown as {
          relation: { relationOid: number; schema: string; name: string };
          new?: Row;
          copy?: CopyRow;
          key: Row | null;
          old: Row | null;
        };
        const rel = relOf(m.relation);
        if (rel === null || inMarkers) return undefined;
        const change: Change =
          message.tag === 'insert'
            ? m.copy
              ? new EncodedInsert(rel, m.copy, m as { new: Row })
              : { kind: 'insert', rel, values: m.new ?? {} }
            : message.tag === 'update'
              ? { kind: 'update', rel, key: m.key, old: m.old, values: m.new ?? {} }
              : { kind: 'delete', rel, key: m.key, old: m.old };
        return options.handlers.change(change, bytes);
      }
      case 'truncate': {
        const m = message as unknown as {
          cascade: boolean;
          restartIdentity: boolean;
          relations: { relationOid: number; schema: string; name: string }[];
        };
        if (inMarkers) return undefined;
        const rels = m.relations.flatMap((r) => {
          const rel = relOf(r);
          return rel ? [rel] : [];
        });
        if (rels.length === 0) return undefined;
        return options.handlers.change(
          {
            kind: 'truncate',
            rels,
            cascade: m.cascade,
            restartIdentity: m.restartIdentity,
          },
          bytes,
        );
      }
      default:
        // type, origin and logical messages carry nothing to apply.
        return undefined;
    }
  };

  // The library hands over each message and waits for this handler before the next one (its socket stays
  // paused meanwhile). Queueing here and handling in our own loop lets the source keep decoding (and the
  // socket keep filling) while a handler waits for the target; the receive only waits when the queue is full.
  const queue: { lsn: Lsn | undefined; message: Message; bytes: number }[] = [];
  let head = 0;
  let queuedBytes = 0;
  let wakeConsumer: (() => void) | undefined;
  let paused = false;
  let streaming = false;
  /**
   * The replication connection's socket. The library keeps it private but pauses and resumes it the same way
   * for its own flow control; without it there is no backpressure, so its absence is an error.
   */
  const socket = (): { pause(): void; resume(): void } => {
    const stream = (
      service as unknown as { _connection?: { stream?: { pause?: unknown; resume?: unknown } } }
    )._connection?.stream;
    if (typeof stream?.pause !== 'function' || typeof stream.resume !== 'function')
      throw new Error(
        'pg-logical-replication no longer exposes its socket: the replay cannot pause the stream',
      );
    return stream as { pause(): void; resume(): void };
  };
  const queued = () => queue.length - head;
  /** Ends the stream with `error` (the first one wins). */
  const stopWith = (error: Error) => {
    failure ??= error;
    void service.stop();
  };
  /** Stops or starts reading the socket; false (and the stream ended) when the socket cannot be reached. */
  const setPaused = (value: boolean): boolean => {
    try {
      if (value) socket().pause();
      else socket().resume();
    } catch (error) {
      stopWith(error as Error);
      return false;
    }
    paused = value;
    return true;
  };
  let sinceYield = 0;
  const consume = async () => {
    while (!failure && !stopping) {
      const item = queue[head];
      if (!item) {
        if (streaming && !paused && !stopping && !failure) {
          if (!setPaused(true)) continue;
          setTimeout(() => {
            // Unless the queue filled meanwhile (then it resumes once half empty, as after any pause).
            if (paused && queued() === 0 && !stopping && !failure) setPaused(false);
          }, IDLE_READ_DELAY_MS);
        }
        await new Promise<void>((resolve) => {
          wakeConsumer = resolve;
        });
        wakeConsumer = undefined;
        continue;
      }
      queue[head] = undefined as never;
      head += 1;
      if (head >= 1024 && head * 2 >= queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      queuedBytes -= item.bytes;
      if (paused && queued() < QUEUE_MAX_MESSAGES / 2 && queuedBytes < QUEUE_MAX_BYTES / 2) setPaused(false);
      try {
        // Most changes are handled synchronously: only wait when the handler has to.
        const pending = dispatch(item.lsn, item.message, item.bytes);
        if (pending) {
          await pending;
          sinceYield = 0;
        } else if (++sinceYield >= YIELD_EVERY) {
          // Let the event loop read the sockets now and then: the walsender keeps sending while the queue
          // is worked off, and the target's answers are seen without waiting for the queue to empty.
          sinceYield = 0;
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      } catch (error) {
        // The library would go on with the next message after a failed one: stop here instead.
        failure = error as Error;
        void service.stop();
      } finally {
        handled += 1;
      }
    }
  };
  void consume().catch(stopWith);
  let received = 0;
  const take = (lsn: Lsn | undefined, message: Message, bytes: number) => {
    received += 1;
    if (failure || stopping) return;
    queue.push({ lsn, message, bytes });
    queuedBytes += bytes;
    wakeConsumer?.();
    if (!paused && (queued() >= QUEUE_MAX_MESSAGES || queuedBytes >= QUEUE_MAX_BYTES)) setPaused(true);
  };
  const heartbeat = async (walEnd: Lsn, shouldRespond: boolean) => {
    keepalive = { walEnd, upTo: received };
    if (shouldRespond) await respond();
  };
  /**
   * The replication connection's CopyData messages, read here rather than by pg-logical-replication's handler,
   * which formats every message's position as a string and starts a promise per message for its acknowledge
   * timer (off here): a tenth of the replay's CPU time on a busy stream. Taken over when the server starts
   * streaming, before its first message.
   * https://www.postgresql.org/docs/current/protocol-replication.html (XLogData 'w', keepalive 'k')
   */
  const onCopyData = ({ chunk }: { chunk: Buffer }) => {
    const kind = chunk[0];
    if (kind === 0x77) {
      // XLogData: Int64 start, Int64 end, Int64 send time, then the pgoutput message. Only a Begin needs the start.
      let message: Message;
      try {
        // Transactions and rows are decoded in place; the library parses the rest (Relation, Truncate …).
        message = (isDecodedHere(chunk, 25)
          ? parseMessage(chunk, plugin.relations, plugin.arena, 25)
          : plugin.parse(chunk.subarray(25))) as unknown as Message;
      } catch (error) {
        stopWith(error as Error);
        return;
      }
      take(chunk[25] === 0x42 ? (chunk.readBigUInt64BE(1) as Lsn) : undefined, message, chunk.length - 25);
    } else if (kind === 0x6b) {
      // Primary keepalive: Int64 WAL end, Int64 send time, Byte1 reply requested.
      void heartbeat(chunk.readBigUInt64BE(1) as Lsn, chunk[17] === 1).catch(stopWith);
    }
  };
  service.once('start', () => {
    streaming = true;
    // node-postgres's client listens too (for COPY queries; a no-op here); the library added its listener last.
    const connection = (service as unknown as { _connection?: unknown })._connection as
      | {
          listeners(event: string): ((...args: unknown[]) => void)[];
          removeListener(event: string, listener: (...args: unknown[]) => void): void;
          on(event: string, listener: (message: { chunk: Buffer }) => void): void;
        }
      | undefined;
    const listeners = typeof connection?.listeners === 'function' ? connection.listeners('copyData') : [];
    const library = listeners[listeners.length - 1];
    if (!connection || listeners.length !== 2 || !library || /_handleCopyData/.test(library.name)) {
      stopWith(
        new Error(
          'pg-logical-replication no longer reads the stream as expected: the replay cannot take it over',
        ),
      );
      return;
    }
    connection.removeListener('copyData', library);
    connection.on('copyData', onCopyData);
  });

  let durable: Lsn | undefined;
  const respond = async () => {
    // A status message is also the answer to "reply requested" keepalives (wal_sender_timeout).
    if (durable !== undefined) await service.acknowledge(forLibrary(durable));
  };

  let endedResolve: () => void = () => undefined;
  let endedReject: (e: Error) => void = () => undefined;
  const ended = new Promise<void>((resolve, reject) => {
    endedResolve = resolve;
    endedReject = reject;
  });
  ended.catch(() => undefined);
  service.on('error', (error: Error) => {
    failure ??= error;
  });
  const started = new Promise<void>((resolve) => service.once('start', () => resolve()));
  const subscription = service.subscribe(plugin, options.slotName, formatLsn(options.startLsn));
  subscription.then(
    () => (failure && !stopping ? endedReject(failure) : endedResolve()),
    (error: Error) => (stopping && !failure ? endedResolve() : endedReject(failure ?? error)),
  );
  // Either replication starts, or the subscription fails first (slot in use, missing publication …).
  await Promise.race([started, subscription.then(() => undefined)]);
  if (!failure) {
    // Backpressure depends on it: find out now, not first under load.
    try {
      socket();
    } catch (error) {
      failure = error as Error;
    }
  }
  if (failure) {
    await service.stop().catch(() => undefined);
    throw failure;
  }
  durable = options.startLsn;

  return {
    acknowledge: async (lsn) => {
      durable = lsn;
      await service.acknowledge(forLibrary(lsn));
    },
    idleWalEnd: () => (keepalive && handled >= keepalive.upTo ? keepalive.walEnd : undefined),
    pending: () => received - handled,
    ping: async (lsn) => {
      durable = lsn;
      await service.acknowledge(forLibrary(lsn), true);
    },
    fail: (error) => {
      failure ??= error;
      wakeConsumer?.();
      void service.stop();
    },
    stop: async () => {
      stopping = true;
      wakeConsumer?.();
      await service.stop().catch(() => undefined);
      await ended.catch(() => undefined);
    },
    ended: ended.then(() => {
      if (failure && !stopping) throw failure;
    }),
  };
}
