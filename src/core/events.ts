// Progress as events: the console, the job summary and Slack subscribe; workflows only emit.
import type { ValidationReport } from './validation';

export type MigrationEvent =
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'snapshot:ready'; snapshotName: string; consistentLsn: string; slotName: string }
  | { type: 'step'; step: string; status: 'start' | 'done' | 'skip'; detail?: string }
  | {
      type: 'copy:plan';
      tables: number;
      parts: number;
      partsDone: number;
      estBytes: number;
      rowsDone: number;
      bytesDone: number;
    }
  | {
      type: 'copy:part:start';
      partId: number;
      table: string;
      partIndex: number;
      partCount: number;
      estBytes: number;
    }
  | { type: 'copy:part:progress'; partId: number; bytes: number }
  | { type: 'copy:part:done'; partId: number; table: string; rows: number; bytes: number; seconds: number }
  | { type: 'copy:done'; rows: number; bytes: number; seconds: number }
  | {
      type: 'replay:lag';
      lagBytes: number;
      lagSeconds: number;
      sourceLsn: string;
      appliedLsn: string;
      sourceWalRate: number;
      replayRate: number;
      /** null: not catching up at the current rates. */
      etaSeconds: number | null;
      caughtUp: boolean;
      retainedBytes: number | null;
    }
  | { type: 'cutover:step'; step: string; detail?: string; seconds?: number }
  | { type: 'cutover:done'; seconds: number; endLsn: string }
  | { type: 'validation:done'; report: ValidationReport };

export type EmitEvent = (event: MigrationEvent) => void;
