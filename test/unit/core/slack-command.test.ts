import { describe, expect, it } from 'vitest';
import {
  buildButtonValue,
  decideApproval,
  parseButtonValue,
  parseMigrateCommand,
} from '../../../src/core/slack-command';
import type { ApprovalRecord } from '../../../src/core/slack-ports';

const record: ApprovalRecord = {
  migrationId: 'shop',
  key: 'k1',
  ref: { channel: 'C1', ts: '1.1' },
  requestedBy: 'UALICE',
  requestedAtMs: 1000,
  checksum: false,
  decision: null,
};
const policy = { users: ['UBOB'], groupMembers: ['UCAROL'] };

describe('/migrate parsing', () => {
  it('reads each subcommand with its id and flags, defaulting the id', () => {
    expect(parseMigrateCommand('status', 'shop')).toEqual({ kind: 'status', migrationId: 'shop' });
    expect(parseMigrateCommand('  cutover orders --checksum ', 'shop')).toEqual({
      kind: 'cutover',
      migrationId: 'orders',
      checksum: true,
    });
    expect(parseMigrateCommand('validate', 'shop')).toEqual({
      kind: 'validate',
      migrationId: 'shop',
      checksum: false,
    });
    expect(parseMigrateCommand('clean shop --prune', 'x')).toEqual({
      kind: 'clean',
      migrationId: 'shop',
      prune: true,
    });
  });

  it('answers anything else with usage and the reason', () => {
    expect(parseMigrateCommand('', 'shop')).toEqual({ kind: 'usage', problem: null });
    expect(parseMigrateCommand('deploy', 'shop')).toMatchObject({
      kind: 'usage',
      problem: expect.stringContaining("'deploy'"),
    });
    expect(parseMigrateCommand('status --prune', 'shop')).toMatchObject({
      kind: 'usage',
      problem: expect.stringContaining('--prune'),
    });
    expect(parseMigrateCommand('status Bad-Id', 'shop')).toMatchObject({
      kind: 'usage',
      problem: expect.stringContaining('not a migration id'),
    });
    expect(parseMigrateCommand('status a b', 'shop')).toMatchObject({ kind: 'usage' });
  });
});

describe('cutover approval', () => {
  const click = (userId: string, verdict: 'approved' | 'rejected' = 'approved') =>
    decideApproval(record, { userId, verdict, nowMs: 5000 }, policy);

  it('lets an allowed user other than the requester approve, by id or through the group', () => {
    expect(click('UBOB')).toMatchObject({
      kind: 'decided',
      record: { decision: { verdict: 'approved', by: 'UBOB', atMs: 5000 } },
    });
    expect(click('UCAROL')).toMatchObject({ kind: 'decided' });
  });

  it('never lets the requester approve, even an allowed one', () => {
    expect(
      decideApproval(
        { ...record, requestedBy: 'UBOB' },
        { userId: 'UBOB', verdict: 'approved', nowMs: 1 },
        policy,
      ),
    ).toEqual({
      kind: 'refused',
      reason: 'requester',
    });
  });

  it('refuses others, and everyone when no approver is configured', () => {
    expect(click('UMALLORY')).toEqual({ kind: 'refused', reason: 'not-an-approver' });
    expect(
      decideApproval(
        record,
        { userId: 'UBOB', verdict: 'approved', nowMs: 1 },
        { users: [], groupMembers: [] },
      ),
    ).toEqual({
      kind: 'refused',
      reason: 'no-approvers-configured',
    });
  });

  it('lets the requester withdraw (reject) but not a stranger', () => {
    expect(click('UALICE', 'rejected')).toMatchObject({
      kind: 'decided',
      record: { decision: { verdict: 'rejected' } },
    });
    expect(click('UMALLORY', 'rejected')).toEqual({ kind: 'refused', reason: 'not-an-approver' });
  });

  it('does nothing once decided (double clicks)', () => {
    const decided = { ...record, decision: { verdict: 'approved' as const, by: 'UBOB', atMs: 2 } };
    expect(decideApproval(decided, { userId: 'UCAROL', verdict: 'rejected', nowMs: 3 }, policy)).toEqual({
      kind: 'already-decided',
      record: decided,
    });
  });

  it('round-trips button values and rejects foreign ones', () => {
    expect(parseButtonValue(buildButtonValue({ migrationId: 'shop', key: 'k', prune: true }))).toEqual({
      migrationId: 'shop',
      key: 'k',
      prune: true,
    });
    expect(parseButtonValue('{"m":"DROP TABLE","k":"x"}')).toBeUndefined();
    expect(parseButtonValue('not json')).toBeUndefined();
  });
});
