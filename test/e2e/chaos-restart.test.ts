// Chaos during live replay: the source restarts, the target restarts, the network drops every source
// connection, the source refuses connections for a while. One `migrate` process must ride through all of
// it by itself (it logs "reconnecting" and goes on), and the cutover must end with an exact copy. Two
// more cuts are timed on purpose, where a resumed stream can skip a transaction: right after a confirmed
// commit end that the next commit record starts at, and while a transaction is open past an idle
// confirmation. The source is reached through a TCP proxy (test/helpers/tcp-proxy.ts) to cut the path.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertNoLeaks,
  type Background,
  type CliProcess,
  createRandom,
  createWriterTables,
  diffSequences,
  freshDatabases,
  keepServerLogs,
  type Pair,
  query,
  runCli,
  spawnCli,
  startPair,
  startPgbench,
  startWriter,
  type Writer,
  type WriterStats,
  waitFor,
} from '../helpers/clusters';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';

const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MIGRATION_ID = 'restarts';
const PREFILLED_ROWS = 10_000;
/** Sequence numbers of the probe transactions, far above the writer's. */
const PROBE_SEQ = 2_000_000_000;

describe(`a live replay rides through restarts and dropped connections (writer seed ${SEED})`, () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let proxy: TcpProxy;
  let viaProxy: string;
  let dir: string;
  let common: string[];
  let migrate: CliProcess | undefined;
  let writer: Writer | undefined;
  let pgbench: Background | undefined;

  const tail = (text: string, lines = 40) => text.trimEnd().split('\n').slice(-lines).join('\n');
  const reconnects = () => (migrate?.output().stderr.match(/reconnecting in/g) ?? []).length;
  const running = () =>
    migrate !== undefined && migrate.child.exitCode === null && migrate.child.signalCode === null;
  const explain = () => `--- migrate stderr (tail) ---\n${tail(migrate?.output().stderr ?? '')}`;

  let writerStats: WriterStats | undefined;
  /** Stops the writer and pgbench (once): the scenarios below need a source where only they write. */
  const stopWriters = async () => {
    if (writer) {
      writerStats = await writer.stop();
      writer = undefined;
      console.log(
        `[chaos-restart seed ${SEED}] writer: ${writerStats.transactions} transactions, ${writerStats.failed} failed, ${writerStats.uncertain} uncertain, ${writerStats.reconnects} reconnects`,
      );
    }
    await pgbench?.stop();
    pgbench = undefined;
  };
  const streams = () => (migrate?.output().stderr.match(/Replay \(apply\) streaming from/g) ?? []).length;
  const hasAudit = async (seq: number) =>
    (await query(uris.target, 'SELECT 1 FROM audit WHERE seq = $1', [seq])).length > 0;
  const insertAudit = (client: pg.Client, seq: number, note: string) =>
    client.query(`INSERT INTO audit (seq, item_id, op, note) VALUES ($1, NULL, 'probe', $2)`, [seq, note]);
  /** The source's WAL insert position, the slot's confirmed position and the target's applied position. */
  const positions = async () => {
    const [source] = await query<{ insert: string; confirmed: string }>(
      uris.source,
      `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text AS insert,
              (confirmed_flush_lsn - '0/0'::pg_lsn)::text AS confirmed
         FROM pg_replication_slots WHERE slot_name = $1`,
      [`pg_live_migrate_${MIGRATION_ID}`],
    );
    const [target] = await query<{ applied: string }>(
      uris.target,
      `SELECT (applied_lsn - '0/0'::pg_lsn)::text AS applied FROM _pg_live_migrate.replay WHERE migration_id = $1`,
      [MIGRATION_ID],
    );
    return {
      insert: BigInt(source?.insert ?? -1),
      confirmed: BigInt(source?.confirmed ?? -1),
      applied: BigInt(target?.applied ?? -1),
    };
  };
  /**
   * Commits `commit` while the source path is cut (so the replay cannot see it before it reconnects), then
   * checks that the transaction reaches the target: a later marker transaction is applied first, so a
   * missing row means the resumed stream skipped it.
   */
  const commitWhileCut = async (
    what: string,
    commit: () => Promise<void>,
    seq: number,
    markerSeq: number,
  ) => {
    const streamsBefore = streams();
    const at = await positions();
    proxy.refuse();
    await commit();
    proxy.accept();
    await waitFor(() => streams() > streamsBefore || !running(), {
      timeoutMs: 60_000,
      what: `the replay to reconnect after ${what}`,
    });
    expect(running(), explain()).toBe(true);
    await query(
      uris.source,
      `INSERT INTO audit (seq, item_id, op, note) VALUES ($1, NULL, 'probe', 'marker')`,
      [markerSeq],
    );
    await waitFor(() => hasAudit(markerSeq), {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: `marker ${markerSeq} on the target`,
    });
    const slot = await positions();
    expect(
      await hasAudit(seq),
      `${what}: the transaction committed while the path was cut (its commit record at ${at.insert}, the position the replay had applied (${at.applied}) and confirmed (${at.confirmed})) is missing on the target, though a later one arrived. The resumed stream skipped it. Now: confirmed ${slot.confirmed}, applied ${slot.applied}.\n${explain()}`,
    ).toBe(true);
  };

  /** Target's highest audit sequence (the writer's rows arrive there only through the replay). */
  const targetAuditMax = async () =>
    Number(
      (await query<{ m: string }>(uris.target, 'SELECT coalesce(max(seq), 0)::text AS m FROM audit'))[0]?.m,
    );

  /**
   * Runs a disruption and checks the same migrate process said "reconnecting", is still running, and
   * applies what the writer commits after the disruption.
   */
  const survives = async (what: string, disrupt: () => Promise<void>) => {
    expect(running(), explain()).toBe(true);
    const before = reconnects();
    await disrupt();
    await waitFor(() => reconnects() > before || !running(), {
      timeoutMs: 60_000,
      what: `"reconnecting" in the log after ${what}`,
    }).catch((error: Error) => {
      throw new Error(`${error.message}\n${explain()}`);
    });
    expect(running(), `migrate exited after ${what}\n${explain()}`).toBe(true);
    // Writes committed after the disruption reach the target through the same process.
    const committed = writer?.lastCommittedAuditSeq() ?? 0;
    const mark = await waitFor(
      () =>
        writer && writer.lastCommittedAuditSeq() > committed ? writer.lastCommittedAuditSeq() : undefined,
      {
        timeoutMs: 60_000,
        what: 'the writer to commit again',
      },
    );
    await waitFor(async () => (running() && (await targetAuditMax()) >= mark) || !running(), {
      timeoutMs: 120_000,
      intervalMs: 250,
      what: `audit seq ${mark} on the target after ${what}`,
    }).catch((error: Error) => {
      throw new Error(`${error.message}\n${explain()}`);
    });
    expect(running(), `migrate exited after ${what}\n${explain()}`).toBe(true);
  };

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'restarts');
    await pair.source.run('pgbench', [
      '-i',
      '-q',
      '-s',
      '2',
      '-h',
      '127.0.0.1',
      '-p',
      String(pair.source.port),
      '-U',
      'postgres',
      'restarts',
    ]);
    await createWriterTables(uris.source, PREFILLED_ROWS);
    proxy = await startTcpProxy({ port: pair.source.port });
    viaProxy = `postgresql://postgres@127.0.0.1:${proxy.port}/restarts`;
    dir = `${pair.target.dataDir}-work`;
    common = ['--target', uris.target, '--dir', dir, '--migration-id', MIGRATION_ID];
  });

  afterAll(async () => {
    try {
      await writer?.stop();
      await pgbench?.stop();
      if (migrate && running()) {
        migrate.child.kill('SIGKILL');
        await migrate.result;
      }
      await proxy?.close();
      if (uris) await runCli(['clean', '--source', uris.source, ...common, '--prune']);
      if (pair) await assertNoLeaks(pair);
    } finally {
      if (pair && dir) await keepServerLogs(pair, dir);
      await pair?.stop();
    }
  });

  it('copies and replays live with the writers running', async () => {
    writer = startWriter(uris.source, { random: createRandom(SEED), prefilled: PREFILLED_ROWS });
    pgbench = startPgbench(pair.source, 'restarts', ['-n', '-c', '1', '-R', '100', '-T', '3600']);
    migrate = spawnCli([
      'migrate',
      '--source',
      viaProxy,
      ...common,
      '--lag-interval',
      '1s',
      '--table-jobs',
      '2',
    ]);
    // The copy is done and the replay applies live (rows copied in the snapshot do not count).
    await waitFor(() => streams() > 0 || !running(), { timeoutMs: 120_000, what: 'live replay to start' });
    expect(running(), explain()).toBe(true);
    const committed = writer.lastCommittedAuditSeq();
    const mark = await waitFor(
      () =>
        writer && writer.lastCommittedAuditSeq() > committed ? writer.lastCommittedAuditSeq() : undefined,
      { timeoutMs: 30_000, what: 'the writer to commit' },
    );
    await waitFor(async () => !running() || (await targetAuditMax().catch(() => 0)) >= mark, {
      timeoutMs: 120_000,
      intervalMs: 250,
      what: 'live replay of the writer',
    });
    expect(running(), explain()).toBe(true);
  }, 180_000);

  it('reconnects by itself after the source restarts', async () => {
    await survives('a source restart', () => pair.source.restart());
  }, 240_000);

  it('reconnects by itself after the target restarts', async () => {
    await survives('a target restart', () => pair.target.restart());
  }, 240_000);

  it('reconnects by itself after every source connection is dropped on the network', async () => {
    await survives('dropped connections', async () => {
      await waitFor(() => proxy.open() > 0, { timeoutMs: 30_000, what: 'proxied connections' });
      expect(proxy.dropAll()).toBeGreaterThan(0);
    });
  }, 240_000);

  it('reconnects by itself once the source accepts connections again after refusing them', async () => {
    await survives('refused connections', async () => {
      const accepted = proxy.accepted();
      expect(proxy.refuse()).toBeGreaterThan(0);
      // A reconnect attempt is turned away before the path opens again.
      await waitFor(() => proxy.accepted() > accepted, {
        timeoutMs: 60_000,
        what: 'refused reconnects',
      });
      proxy.accept();
    });
  }, 240_000);

  // The next two drop the connection at a chosen moment instead of a random one, with only the test writing
  // on the source: right after the replay confirmed a commit end (or an idle WAL end) at which the next
  // transaction's commit record starts. Resuming from there must not skip that transaction.
  it('loses nothing when the path drops between two commits that follow each other in the WAL', async () => {
    await stopWriters();
    const a = new pg.Client({ connectionString: uris.source, application_name: 'plm-test-probe' });
    const b = new pg.Client({ connectionString: uris.source, application_name: 'plm-test-probe' });
    await a.connect();
    await b.connect();
    try {
      for (let attempt = 1; ; attempt++) {
        const seqA = PROBE_SEQ + attempt * 10;
        const seqB = seqA + 1;
        await a.query('BEGIN');
        await insertAudit(a, seqA, 'adjacent-a');
        await b.query('BEGIN');
        await insertAudit(b, seqB, 'adjacent-b');
        await a.query('COMMIT');
        // The replay applies A alone (B is not committed) and confirms A's end to the source.
        const at = await waitFor(
          async () => {
            if (!(await hasAudit(seqA))) return undefined;
            const p = await positions();
            return p.confirmed >= p.applied && p.applied > 0n ? p : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 100, what: 'A applied and confirmed' },
        );
        if (at.insert !== at.applied) {
          // Something else wrote WAL after A (autovacuum, a checkpoint): B would not follow A directly.
          await b.query('COMMIT');
          console.log(
            `[chaos-restart] attempt ${attempt}: other WAL after A (${at.insert} vs ${at.applied}); again`,
          );
          expect(attempt, 'B never got to follow A directly in the WAL').toBeLessThan(5);
          continue;
        }
        // B's commit record now starts exactly at A's end: the position the replay applied and confirmed.
        await commitWhileCut(
          'adjacent commits',
          () => b.query('COMMIT').then(() => undefined),
          seqB,
          seqB + 1,
        );
        break;
      }
    } finally {
      await a.end().catch(() => undefined);
      await b.end().catch(() => undefined);
    }
  }, 240_000);

  it('loses nothing when the path drops while a transaction stays open past an idle acknowledgement', async () => {
    await stopWriters();
    const c = new pg.Client({ connectionString: uris.source, application_name: 'plm-test-probe' });
    await c.connect();
    try {
      const seq = PROBE_SEQ + 1000;
      await c.query('BEGIN');
      await insertAudit(c, seq, 'open-past-idle-ack');
      // Idle, the replay confirms the WAL end the source reports: the end of this open transaction's last
      // record, which is where its commit record will start.
      await waitFor(
        async () => {
          const p = await positions();
          return p.applied === p.insert && p.confirmed >= p.applied ? p : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 100, what: 'the idle replay to confirm the WAL end' },
      );
      await commitWhileCut(
        'an open transaction',
        () => c.query('COMMIT').then(() => undefined),
        seq,
        seq + 1,
      );
    } finally {
      await c.end().catch(() => undefined);
    }
  }, 240_000);

  it('cuts over to an exact copy: equal checksums, every writer row once, none missing', async () => {
    expect(running(), explain()).toBe(true);
    await stopWriters();
    const stats = writerStats;
    const [{ lsn } = { lsn: '0' }] = await query<{ lsn: string }>(
      uris.source,
      `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text AS lsn`,
    );
    await waitFor(
      async () => {
        const rows = await query<{ a: string }>(
          uris.target,
          `SELECT (applied_lsn - '0/0'::pg_lsn)::text AS a FROM _pg_live_migrate.replay WHERE migration_id = $1`,
          [MIGRATION_ID],
        );
        return !running() || BigInt(rows[0]?.a ?? '0') >= BigInt(lsn);
      },
      { timeoutMs: 120_000, intervalMs: 250, what: 'the replay to catch up' },
    );
    const cutover = await runCli([
      'cutover',
      '--source',
      viaProxy,
      ...common,
      '--checksum',
      '--timeout',
      '5min',
    ]);
    expect(cutover.code, `${cutover.stderr}\n${explain()}`).toBe(0);
    const result = await (migrate as CliProcess).result;
    expect(result.code, tail(result.stderr, 80)).toBe(0);
    expect(result.stderr).toContain('Migration successfully completed');
    expect((result.stderr.match(/reconnecting in/g) ?? []).length).toBeGreaterThanOrEqual(4);

    const validation = await runCli(['validate', '--source', uris.source, ...common, '--checksum', '--json']);
    expect(JSON.parse(validation.stdout).ok, validation.stderr).toBe(true);
    for (const table of ['items', 'audit']) {
      const diff = await diffSequences(uris.source, uris.target, table);
      expect(diff, `${table}: ${JSON.stringify(diff)}`).toMatchObject({
        counts: { missing: 0, extra: 0, duplicated: 0 },
        targetRows: diff.sourceRows,
      });
    }
    const onSource = new Set(
      (await query<{ seq: string }>(uris.source, 'SELECT seq::text AS seq FROM audit')).map((r) =>
        Number(r.seq),
      ),
    );
    expect(stats?.committedAuditSeqs.filter((s) => !onSource.has(s))).toEqual([]);
    const cleaned = await runCli(['clean', '--source', uris.source, ...common, '--prune']);
    expect(cleaned.code, cleaned.stderr).toBe(0);
  }, 300_000);
});
