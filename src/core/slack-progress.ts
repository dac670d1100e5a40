// Folds migration events into what the Slack message shows (phase, copy counts, lag, cutover) and the
// milestones that become thread replies (copy started/finished, caught up, lag alerts, cutover, validation,
// errors). Pure: time comes in with each event; rendering is in slack-message.ts.
import type { MigrationEvent } from './events';
import {
  computeLagAlert,
  DEFAULT_LAG_ALERT_TIMING,
  INITIAL_LAG_ALERT,
  type LagAlertState,
  type LagTarget,
} from './slack-lag-alert';
import type { ValidationReport } from './validation';

export const ProgressPhase = {
  starting: 'starting',
  snapshot: 'snapshot',
  copy: 'copy',
  copied: 'copied',
  replay: 'replay',
  cutover: 'cutover',
  done: 'done',
  failed: 'failed',
} as const;
export type ProgressPhase = (typeof ProgressPhase)[keyof typeof ProgressPhase];

export interface CopyProgress {
  tables: number;
  tablesDone: number;
  parts: number;
  partsDone: number;
  /** Parts already on the target when this run started (a resume). */
  partsBefore: number;
  rows: number;
  bytes: number;
  estBytes: number;
  startedAtMs: number;
  seconds: number | null;
}

export interface LagProgress {
  lagBytes: number;
  lagSeconds: number;
  sourceWalRate: number;
  replayRate: number;
  etaSeconds: number | null;
  caughtUp: boolean;
  atMs: number;
}

export interface CutoverProgress {
  startedAtMs: number;
  detail: string | null;
  steps: { step: string; detail: string | null; seconds: number | null }[];
  seconds: number | null;
  endLsn: string | null;
}

export interface ProgressState {
  migrationId: string;
  phase: ProgressPhase;
  copy: CopyProgress | null;
  lag: LagProgress | null;
  lagTarget: LagTarget | null;
  lagAlert: LagAlertState;
  replayStartedAtMs: number | null;
  caughtUpAtMs: number | null;
  cutover: CutoverProgress | null;
  validation: { ok: boolean; atMs: number } | null;
  error: { code: string; message: string; hint: string } | null;
  updatedAtMs: number;
  /**
   * Whether this run copies first: then lag reported before the copy is done is the spool's (during the
   * copy), not the live replay's, and starts no replay milestones.
   */
  expectCopy: boolean;
  /** Parts done and planned per table of this run's copy, to count finished tables. */
  tableParts: Record<string, { done: number; count: number }>;
}

export type Milestone =
  | { kind: 'copy-started'; tables: number; parts: number; estBytes: number; partsBefore: number }
  | { kind: 'copy-finished'; rows: number; bytes: number; seconds: number }
  | { kind: 'caught-up'; lagBytes: number; replaySeconds: number }
  | { kind: 'lag-breached'; lag: LagProgress; target: LagTarget }
  | { kind: 'lag-recovered'; lag: LagProgress; target: LagTarget; breachSeconds: number }
  | { kind: 'cutover-requested'; detail: string | null }
  | { kind: 'cutover-done'; seconds: number; endLsn: string; steps: CutoverProgress['steps'] }
  | { kind: 'validation'; report: ValidationReport }
  | { kind: 'error'; code: string; message: string; hint: string };

export function createProgress(
  migrationId: string,
  lagTarget: LagTarget | null,
  nowMs: number,
  expectCopy = false,
): ProgressState {
  return {
    expectCopy,
    migrationId,
    phase: ProgressPhase.starting,
    copy: null,
    lag: null,
    lagTarget,
    lagAlert: INITIAL_LAG_ALERT,
    replayStartedAtMs: null,
    caughtUpAtMs: null,
    cutover: null,
    validation: null,
    error: null,
    updatedAtMs: nowMs,
    tableParts: {},
  };
}

/** Whether an event changes what the live message shows (the others only feed milestones). */
const VISIBLE: ReadonlySet<MigrationEvent['type']> = new Set([
  'snapshot:ready',
  'copy:plan',
  'copy:part:done',
  'copy:done',
  'replay:lag',
  'cutover:step',
  'cutover:done',
  'validation:done',
]);

export function reduceProgress(
  state: ProgressState,
  event: MigrationEvent,
  nowMs: number,
): { state: ProgressState; milestones: Milestone[]; changed: boolean } {
  const milestones: Milestone[] = [];
  const s: ProgressState = { ...state, updatedAtMs: VISIBLE.has(event.type) ? nowMs : state.updatedAtMs };
  switch (event.type) {
    case 'snapshot:ready':
      if (s.phase === ProgressPhase.starting) s.phase = ProgressPhase.snapshot;
      break;
    case 'copy:plan': {
      const firstPlan = s.copy === null || s.copy.seconds !== null;
      s.phase = ProgressPhase.copy;
      s.copy = {
        tables: event.tables,
        tablesDone: 0,
        parts: event.parts,
        partsDone: event.partsDone,
        partsBefore: event.partsDone,
        rows: event.rowsDone,
        bytes: event.bytesDone,
        estBytes: event.estBytes,
        startedAtMs: nowMs,
        seconds: null,
      };
      s.tableParts = {};
      if (firstPlan)
        milestones.push({
          kind: 'copy-started',
          tables: event.tables,
          parts: event.parts,
          estBytes: event.estBytes,
          partsBefore: event.partsDone,
        });
      break;
    }
    case 'copy:part:start': {
      const entry = s.tableParts[event.table] ?? { done: 0, count: event.partCount };
      s.tableParts = { ...s.tableParts, [event.table]: { ...entry, count: event.partCount } };
      break;
    }
    case 'copy:part:done': {
      if (!s.copy) break;
      const entry = s.tableParts[event.table] ?? { done: 0, count: 1 };
      const next = { ...entry, done: entry.done + 1 };
      s.tableParts = { ...s.tableParts, [event.table]: next };
      s.copy = {
        ...s.copy,
        partsDone: s.copy.partsDone + 1,
        rows: s.copy.rows + event.rows,
        bytes: s.copy.bytes + event.bytes,
        tablesDone: s.copy.tablesDone + (next.done === next.count ? 1 : 0),
      };
      break;
    }
    case 'copy:done':
      s.phase = ProgressPhase.copied;
      s.expectCopy = false;
      s.copy = {
        ...(s.copy ?? {
          tables: 0,
          parts: 0,
          partsDone: 0,
          partsBefore: 0,
          estBytes: event.bytes,
          startedAtMs: nowMs - event.seconds * 1000,
          tablesDone: 0,
        }),
        rows: event.rows,
        bytes: event.bytes,
        seconds: event.seconds,
      };
      s.copy.tablesDone = s.copy.tables;
      s.copy.partsDone = s.copy.parts;
      milestones.push({
        kind: 'copy-finished',
        rows: event.rows,
        bytes: event.bytes,
        seconds: event.seconds,
      });
      break;
    case 'replay:lag': {
      const lag: LagProgress = {
        lagBytes: event.lagBytes,
        lagSeconds: event.lagSeconds,
        sourceWalRate: event.sourceWalRate,
        replayRate: event.replayRate,
        etaSeconds: event.etaSeconds,
        caughtUp: event.caughtUp,
        atMs: nowMs,
      };
      s.lag = lag;
      // During the copy the spool reports lag too; the replay's milestones start after the copy.
      if (s.expectCopy || s.phase === ProgressPhase.copy || s.phase === ProgressPhase.snapshot) break;
      if (s.phase !== ProgressPhase.cutover && s.phase !== ProgressPhase.done) s.phase = ProgressPhase.replay;
      if (s.phase !== ProgressPhase.replay) break;
      s.replayStartedAtMs ??= nowMs;
      if (event.caughtUp && s.caughtUpAtMs === null) {
        s.caughtUpAtMs = nowMs;
        milestones.push({
          kind: 'caught-up',
          lagBytes: event.lagBytes,
          replaySeconds: (nowMs - s.replayStartedAtMs) / 1000,
        });
      }
      if (s.lagTarget) {
        const { state: alertState, alert } = computeLagAlert(
          s.lagAlert,
          { lagBytes: event.lagBytes, lagSeconds: event.lagSeconds, atMs: nowMs },
          { target: s.lagTarget, ...DEFAULT_LAG_ALERT_TIMING },
        );
        s.lagAlert = alertState;
        if (alert?.kind === 'breached') milestones.push({ kind: 'lag-breached', lag, target: s.lagTarget });
        if (alert?.kind === 'recovered')
          milestones.push({
            kind: 'lag-recovered',
            lag,
            target: s.lagTarget,
            breachSeconds: alert.breachMs / 1000,
          });
      }
      break;
    }
    case 'cutover:step':
      if (event.step === 'requested' || !s.cutover) {
        s.phase = ProgressPhase.cutover;
        s.cutover = {
          startedAtMs: nowMs,
          detail: event.detail ?? null,
          steps: [],
          seconds: null,
          endLsn: null,
        };
        if (event.step === 'requested') {
          milestones.push({ kind: 'cutover-requested', detail: event.detail ?? null });
          break;
        }
      }
      s.cutover = {
        ...s.cutover,
        steps: [
          ...s.cutover.steps,
          { step: event.step, detail: event.detail ?? null, seconds: event.seconds ?? null },
        ],
      };
      break;
    case 'cutover:done':
      s.phase = ProgressPhase.done;
      s.cutover = {
        ...(s.cutover ?? { startedAtMs: nowMs, detail: null, steps: [] }),
        seconds: event.seconds,
        endLsn: event.endLsn,
      };
      milestones.push({
        kind: 'cutover-done',
        seconds: event.seconds,
        endLsn: event.endLsn,
        steps: s.cutover.steps,
      });
      break;
    case 'validation:done':
      s.validation = { ok: event.report.ok, atMs: nowMs };
      milestones.push({ kind: 'validation', report: event.report });
      break;
    default:
      break;
  }
  return { state: s, milestones, changed: VISIBLE.has(event.type) || milestones.length > 0 };
}

/** The run ended with an error: the message says so and the thread gets what happened and the fix. */
export function reduceFailure(
  state: ProgressState,
  error: { code: string; message: string; hint: string },
  nowMs: number,
): { state: ProgressState; milestones: Milestone[] } {
  return {
    state: { ...state, phase: ProgressPhase.failed, error, updatedAtMs: nowMs },
    milestones: [{ kind: 'error', ...error }],
  };
}
