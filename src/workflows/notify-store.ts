// The Slack ports kept on the target, in `_pg_live_migrate.slack_message`: the live message of each
// migration (so a resumed run or another runner edits the same one) with the bot's notes, and approval
// requests, decided with one conditional UPDATE so that a double click or a second bot cannot decide twice.
import { withClient } from '../adapters/postgres/client';
import type { ConnInfo } from '../adapters/postgres/connection';
import { CONTROL_SCHEMA, ensureControlSchema } from '../adapters/postgres/control-schema';
import type {
  ApprovalRecord,
  ApprovalStore,
  MessageRef,
  MessageRefStore,
  MigrationNotes,
} from '../core/slack-ports';
import { quoteIdent } from '../core/sql';
import type { Clock } from '../ports';

const T = `${quoteIdent(CONTROL_SCHEMA)}.slack_message`;
const PROGRESS = 'progress';
const MILESTONES_KEPT = 8;

const EMPTY_NOTES: MigrationNotes = { milestones: [], lastValidation: null, runUrl: null };

export function createTargetSlackStore(target: ConnInfo, clock: Clock): MessageRefStore & ApprovalStore {
  const exists = (c: import('pg').Client) =>
    c.query(`SELECT to_regclass($1) IS NOT NULL AS present`, [T]).then((r) => r.rows[0]?.present === true);
  return {
    get: (migrationId) =>
      withClient(target, async (c) => {
        if (!(await exists(c))) return undefined;
        const { rows } = await c.query(
          `SELECT channel, ts, state FROM ${T} WHERE migration_id = $1 AND kind = $2`,
          [migrationId, PROGRESS],
        );
        const r = rows[0];
        return r ? { channel: r.channel, ts: r.ts, notes: { ...EMPTY_NOTES, ...r.state } } : undefined;
      }),
    put: (migrationId, ref, options) =>
      withClient(target, async (c) => {
        await ensureControlSchema(c);
        const { rows } = await c.query(
          `INSERT INTO ${T} (migration_id, kind, channel, ts) VALUES ($1, $2, $3, $4)
           ON CONFLICT (migration_id, kind) DO UPDATE SET channel = $3, ts = $4, updated_at = now() WHERE $5
           RETURNING channel, ts`,
          [migrationId, PROGRESS, ref.channel, ref.ts, options?.replace === true],
        );
        if (rows[0]) return { channel: rows[0].channel, ts: rows[0].ts } as MessageRef;
        const { rows: existing } = await c.query(
          `SELECT channel, ts FROM ${T} WHERE migration_id = $1 AND kind = $2`,
          [migrationId, PROGRESS],
        );
        return (existing[0] as MessageRef | undefined) ?? ref;
      }),
    patchNotes: (migrationId, patch) =>
      withClient(target, async (c) => {
        if (!(await exists(c))) return;
        const { milestone, ...rest } = patch;
        // Read-modify-write: notes are best-effort, and milestones of one migration come from one process.
        const { rows } = await c.query(`SELECT state FROM ${T} WHERE migration_id = $1 AND kind = $2`, [
          migrationId,
          PROGRESS,
        ]);
        if (!rows[0]) return;
        const notes: MigrationNotes = { ...EMPTY_NOTES, ...rows[0].state, ...rest };
        if (milestone)
          notes.milestones = [...notes.milestones, { atMs: clock.nowMs(), text: milestone }].slice(
            -MILESTONES_KEPT,
          );
        await c.query(
          `UPDATE ${T} SET state = $3, updated_at = now() WHERE migration_id = $1 AND kind = $2`,
          [migrationId, PROGRESS, JSON.stringify(notes)],
        );
      }),
    create: (record) =>
      withClient(target, async (c) => {
        await ensureControlSchema(c);
        await c.query(
          `INSERT INTO ${T} (migration_id, kind, channel, ts, state) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (migration_id, kind) DO NOTHING`,
          [record.migrationId, `approval:${record.key}`, record.ref.channel, record.ref.ts, toState(record)],
        );
      }),
    read: (migrationId, key) =>
      withClient(target, async (c) => {
        if (!(await exists(c))) return undefined;
        const { rows } = await c.query(
          `SELECT channel, ts, state FROM ${T} WHERE migration_id = $1 AND kind = $2`,
          [migrationId, `approval:${key}`],
        );
        const r = rows[0];
        if (!r) return undefined;
        return {
          migrationId,
          key,
          ref: { channel: r.channel, ts: r.ts },
          requestedBy: r.state.requestedBy,
          requestedAtMs: r.state.requestedAtMs,
          checksum: r.state.checksum === true,
          decision: r.state.decision ?? null,
        } satisfies ApprovalRecord;
      }),
    decide: (migrationId, key, decision) =>
      withClient(target, async (c) => {
        if (!(await exists(c))) return false;
        const { rowCount } = await c.query(
          `UPDATE ${T} SET state = jsonb_set(state, '{decision}', $3::jsonb), updated_at = now()
            WHERE migration_id = $1 AND kind = $2 AND state->>'decision' IS NULL`,
          [migrationId, `approval:${key}`, JSON.stringify(decision)],
        );
        return rowCount === 1;
      }),
  };
}

function toState(record: ApprovalRecord): string {
  return JSON.stringify({
    requestedBy: record.requestedBy,
    requestedAtMs: record.requestedAtMs,
    checksum: record.checksum,
    decision: record.decision,
  });
}
