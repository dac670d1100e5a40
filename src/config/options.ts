// One schema for every command's options, whichever front end (CLI flags, action inputs, env) fills it.
import { z } from 'zod';
import { MigrationError } from '../core/errors';

export const MIGRATION_ID_PATTERN = /^[a-z0-9_]{1,40}$/;

export const commonOptions = z.object({
  source: z.string().min(1).optional(),
  target: z.string().min(1).optional(),
  migrationId: z.string().regex(MIGRATION_ID_PATTERN).default('default'),
  dir: z.string().min(1),
  json: z.boolean().default(false),
  pgBindir: z.string().optional(),
  /** Schemas to migrate; null = every non-system schema. */
  schemas: z.array(z.string().min(1)).nullable().default(null),
});

/** PostgreSQL to TimescaleDB: a plain source table that becomes a hypertable on the target. */
export const hypertableSpec = z.object({
  schema: z.string().min(1),
  name: z.string().min(1),
  timeColumn: z.string().min(1),
  /** The chunk interval as TimescaleDB takes it: an interval ('1 day') or, for an integer column, a number. */
  chunkInterval: z.string().min(1).nullable(),
});
export type HypertableSpec = z.infer<typeof hypertableSpec>;

/** `[schema.]table:time_column[:chunk_interval]`; the interval may itself contain colons ('01:00:00'). */
export function parseHypertableSpec(text: string): HypertableSpec {
  const [table = '', column = '', ...rest] = text.split(':');
  const dot = table.indexOf('.');
  const schema = dot > 0 ? table.slice(0, dot) : 'public';
  const name = dot > 0 ? table.slice(dot + 1) : table;
  if (!name || !column.trim()) {
    throw new MigrationError(
      'CONFIG_INVALID_OPTION',
      `--hypertable '${text}' does not name a table and its time column.`,
      "Pass [schema.]table:time_column[:chunk_interval], e.g. --hypertable public.readings:at:'1 day'.",
    );
  }
  const interval = rest.join(':').trim();
  return { schema, name, timeColumn: column.trim(), chunkInterval: interval || null };
}

export const copyOptions = commonOptions.extend({
  snapshot: z.string().optional(),
  /** --hypertable table:time_column[:chunk_interval] (repeatable). */
  hypertables: z.array(hypertableSpec).default([]),
  tableJobs: z.number().int().min(1).max(64),
  indexJobs: z.number().int().min(1).max(64),
  splitTablesLargerThan: z.number().int().min(0),
  skipSchema: z.boolean().default(false),
  skipRoles: z.boolean().default(false),
  noOwner: z.boolean().default(false),
  resume: z.boolean().default(false),
  /** Join a running copy as a helper: copy claimable parts only (no schema steps), then exit. */
  partsOnly: z.boolean().optional(),
});

export const validateOptions = commonOptions.extend({
  checksum: z.boolean().default(false),
  markdown: z.string().optional(),
  buckets: z.number().int().min(1).max(4096).default(16),
  /** Copy TimescaleDB chunks that differ again from the source (nothing may write to either side). */
  repair: z.boolean().default(false),
});

export const cleanOptions = commonOptions.extend({ prune: z.boolean().default(false) });

export type CommonOptions = z.infer<typeof commonOptions>;
export type CopyOptions = z.infer<typeof copyOptions>;
export type ValidateOptions = z.infer<typeof validateOptions>;
export type CleanOptions = z.infer<typeof cleanOptions>;
