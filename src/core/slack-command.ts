// The bot's decisions that need no I/O: parsing `/migrate …`, who may approve a cutover (an allowed user
// who is not the requester, at most once), and the values carried by buttons.
//
//   approval: pending ──approve by an allowed non-requester──▶ approved
//             pending ──reject by an allowed user or the requester──▶ rejected
//             approved | rejected ──any click──▶ unchanged (a double click does nothing)
import type { ApprovalRecord, ApprovalVerdict } from './slack-ports';

/** The CLI's rule for --migration-id (it becomes part of the slot name). */
const MIGRATION_ID = /^[a-z0-9_]{1,40}$/;

export type MigrateCommand =
  | { kind: 'status'; migrationId: string }
  | { kind: 'cutover'; migrationId: string; checksum: boolean }
  | { kind: 'validate'; migrationId: string; checksum: boolean }
  | { kind: 'clean'; migrationId: string; prune: boolean }
  | { kind: 'usage'; problem: string | null };

const FLAGS: Record<string, readonly string[]> = {
  status: [],
  cutover: ['--checksum'],
  validate: ['--checksum'],
  clean: ['--prune'],
};

export function parseMigrateCommand(text: string, defaultMigrationId: string): MigrateCommand {
  const words = text.trim().split(/\s+/).filter(Boolean);
  const [sub, ...rest] = words;
  if (!sub || sub === 'help') return { kind: 'usage', problem: null };
  const allowed = FLAGS[sub];
  if (!allowed) return { kind: 'usage', problem: `Unknown subcommand '${sub.slice(0, 40)}'.` };
  const flags = rest.filter((w) => w.startsWith('-'));
  const ids = rest.filter((w) => !w.startsWith('-'));
  const badFlag = flags.find((f) => !allowed.includes(f));
  if (badFlag)
    return {
      kind: 'usage',
      problem: `'${sub}' takes ${allowed.length ? allowed.join(', ') : 'no options'}, not '${badFlag.slice(0, 40)}'.`,
    };
  if (ids.length > 1)
    return { kind: 'usage', problem: `'${sub}' takes one migration id, got ${ids.length}.` };
  const migrationId = ids[0] ?? defaultMigrationId;
  if (!MIGRATION_ID.test(migrationId))
    return {
      kind: 'usage',
      problem: `'${migrationId.slice(0, 60)}' is not a migration id (1-40 of a-z, 0-9, _).`,
    };
  switch (sub) {
    case 'status':
      return { kind: 'status', migrationId };
    case 'cutover':
      return { kind: 'cutover', migrationId, checksum: flags.includes('--checksum') };
    case 'validate':
      return { kind: 'validate', migrationId, checksum: flags.includes('--checksum') };
    default:
      return { kind: 'clean', migrationId, prune: flags.includes('--prune') };
  }
}

export interface ApproverPolicy {
  /** Slack user ids allowed to approve. */
  users: readonly string[];
  /** Members of the configured user group (resolved by the caller). */
  groupMembers: readonly string[];
}

export function isApprover(userId: string, policy: ApproverPolicy): boolean {
  return policy.users.includes(userId) || policy.groupMembers.includes(userId);
}

export type ApprovalOutcome =
  | { kind: 'decided'; record: ApprovalRecord }
  | { kind: 'already-decided'; record: ApprovalRecord }
  | { kind: 'refused'; reason: 'requester' | 'not-an-approver' | 'no-approvers-configured' };

/** Applies a click to an approval request. */
export function decideApproval(
  record: ApprovalRecord,
  click: { userId: string; verdict: ApprovalVerdict; nowMs: number },
  policy: ApproverPolicy,
): ApprovalOutcome {
  if (record.decision) return { kind: 'already-decided', record };
  const allowed = isApprover(click.userId, policy);
  if (click.verdict === 'approved') {
    if (click.userId === record.requestedBy) return { kind: 'refused', reason: 'requester' };
    if (policy.users.length === 0 && policy.groupMembers.length === 0)
      return { kind: 'refused', reason: 'no-approvers-configured' };
    if (!allowed) return { kind: 'refused', reason: 'not-an-approver' };
  } else if (!allowed && click.userId !== record.requestedBy) {
    // The requester may withdraw; anyone else rejecting must be an approver.
    return { kind: 'refused', reason: 'not-an-approver' };
  }
  return {
    kind: 'decided',
    record: { ...record, decision: { verdict: click.verdict, by: click.userId, atMs: click.nowMs } },
  };
}

export const REFUSAL_TEXT: Record<Extract<ApprovalOutcome, { kind: 'refused' }>['reason'], string> = {
  requester: 'the requester cannot approve their own cutover; another approver must',
  'not-an-approver': 'not in the approvers (PG_LIVE_MIGRATE_APPROVERS or PG_LIVE_MIGRATE_APPROVER_GROUP)',
  'no-approvers-configured':
    'no approvers are configured: set PG_LIVE_MIGRATE_APPROVERS (Slack user ids) or PG_LIVE_MIGRATE_APPROVER_GROUP',
};

/** What a button carries: the migration and a key of the request it belongs to. Short and opaque. */
export interface ButtonValue {
  migrationId: string;
  key: string;
  prune?: boolean;
}

export function buildButtonValue(v: ButtonValue): string {
  return JSON.stringify({ m: v.migrationId, k: v.key, ...(v.prune ? { p: 1 } : {}) });
}

export function parseButtonValue(text: string): ButtonValue | undefined {
  try {
    const raw = JSON.parse(text) as { m?: unknown; k?: unknown; p?: unknown };
    if (typeof raw.m !== 'string' || !MIGRATION_ID.test(raw.m) || typeof raw.k !== 'string') return undefined;
    return { migrationId: raw.m, key: raw.k, ...(raw.p ? { prune: true } : {}) };
  } catch {
    return undefined;
  }
}
