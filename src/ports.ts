// What workflows need from the outside world besides the databases: events out, time in.
import type { EmitEvent } from './core/events';
import type { Redactor } from './core/redact';

export interface Clock {
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };

/** Everything a workflow gets from its entry point. */
export interface WorkflowContext {
  emit: EmitEvent;
  clock: Clock;
  redactor: Redactor;
  /** Environment handed to child tools (pg_dump …); entry points pass process.env. */
  env: NodeJS.ProcessEnv;
  /** Resolves when the user asked to stop (SIGINT/SIGTERM); workflows stop at a safe point. */
  stopSignal: AbortSignal;
}
