// pg_dump, pg_restore and pg_dumpall as child processes: the schema is always theirs, never re-implemented.
// Connection details reach them through PG* variables so no password is ever on a command line.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MigrationError } from '../../core/errors';
import type { Redactor } from '../../core/redact';
import { quoteIdent, quoteLiteral } from '../../core/sql';
import { type ConnInfo, toLibpqEnv } from './connection';

export type PgTool = 'pg_dump' | 'pg_restore' | 'pg_dumpall' | 'psql';

export interface ToolContext {
  /** Folder with the client binaries; undefined = PATH. */
  binDir: string | undefined;
  env: NodeJS.ProcessEnv;
  redactor: Redactor;
}

export function toolPath(ctx: ToolContext, tool: PgTool): string {
  return ctx.binDir ? join(ctx.binDir, tool) : tool;
}

interface RunResult {
  stdout: string;
  stderr: string;
}

export function runTool(
  ctx: ToolContext,
  tool: PgTool,
  args: string[],
  conn: ConnInfo | undefined,
  options: { input?: string; maxStdoutBytes?: number } = {},
): Promise<RunResult> {
  const env = conn ? toLibpqEnv(conn, ctx.env) : ctx.env;
  return new Promise((resolve, reject) => {
    const child = spawn(toolPath(ctx, tool), args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64_000) err = err.slice(-32_000);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT'
          ? new MigrationError(
              'PG_TOOL_NOT_FOUND',
              `${tool} was not found (looked for '${toolPath(ctx, tool)}').`,
              'Install the PostgreSQL client package matching the source major version (e.g. apt-get install postgresql-client-16), or point --pg-bindir at its bin folder.',
            )
          : error,
      );
    });
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = ctx.redactor.redact(err);
      if (code === 0) resolve({ stdout, stderr });
      else
        reject(
          Object.assign(new Error(`${tool} exited with code ${code}: ${stderr.trim().slice(-4000)}`), {
            stderr,
          }),
        );
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** Major version of a client tool ("pg_dump (PostgreSQL) 16.2" → 16). */
export async function readToolMajor(ctx: ToolContext, tool: PgTool): Promise<number> {
  const { stdout } = await runTool(ctx, tool, ['--version'], undefined);
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(stdout);
  if (!match) throw new Error(`cannot read the version of ${tool} from '${stdout.trim()}'`);
  return Number(match[1]);
}

export function toolExists(ctx: ToolContext, tool: PgTool): boolean {
  if (ctx.binDir) return existsSync(join(ctx.binDir, tool));
  return (ctx.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, tool)));
}

// Host, port, user and password come from the PG* environment; only the database goes on argv.
const dbnameArg = (conn: ConnInfo) => `--dbname=dbname=${quoteLiteral(conn.keywords.dbname ?? 'postgres')}`;

export interface SchemaDumpOptions {
  snapshotName: string;
  schemas: string[] | null;
  file: string;
  /** Left out of the dump (TimescaleDB's chunk schemas and continuous aggregates' views, recreated through its API). */
  exclude?: { schemas: string[]; tables: { schema: string; name: string }[] };
}

export async function dumpSchema(
  ctx: ToolContext,
  source: ConnInfo,
  options: SchemaDumpOptions,
): Promise<void> {
  const args = [
    '--format=custom',
    '--schema-only',
    `--snapshot=${options.snapshotName}`,
    '--no-publications',
    '--no-subscriptions',
    '--exclude-schema=_pg_live_migrate',
    `--file=${options.file}`,
    // -n takes a pattern that folds case unless quoted: quote so 'Mixed Case' means exactly that schema.
    ...(options.schemas ?? []).map((s) => `--schema=${quoteIdent(s)}`),
    ...(options.exclude?.schemas ?? []).map((s) => `--exclude-schema=${quoteIdent(s)}`),
    ...(options.exclude?.tables ?? []).map(
      (t) => `--exclude-table=${quoteIdent(t.schema)}.${quoteIdent(t.name)}`,
    ),
    dbnameArg(source),
  ];
  try {
    await runTool(ctx, 'pg_dump', args, source);
  } catch (error) {
    if (error instanceof MigrationError) throw error;
    throw new MigrationError(
      'SCHEMA_DUMP_FAILED',
      `pg_dump failed on the source: ${(error as Error).message}`,
      'Fix the cause pg_dump names above (often a missing privilege or an expired snapshot), then run the command again with --resume.',
      { cause: error },
    );
  }
}

export interface RestoreOptions {
  file: string;
  section: 'pre-data' | 'post-data';
  noOwner: boolean;
  /** A pg_restore -L list (TOC entries to restore). */
  listFile?: string;
}

const restoreFlags = (o: RestoreOptions) => [
  `--section=${o.section}`,
  ...(o.noOwner ? ['--no-owner', '--no-acl'] : []),
  ...(o.listFile ? [`--use-list=${o.listFile}`] : []),
];

/** The SQL of one section, to run ourselves (pre-data runs in one transaction with its done mark). */
export async function readRestoreSql(ctx: ToolContext, options: RestoreOptions): Promise<string> {
  const { stdout } = await runTool(
    ctx,
    'pg_restore',
    [...restoreFlags(options), '--file=-', options.file],
    undefined,
  );
  // pg_restore 13.22/14.19/15.14/16.10/17.6+ wraps scripts in psql's \restrict guard; we run the SQL
  // ourselves through the protocol, where meta-commands mean nothing. Any other meta-command is a bug.
  const lines = stdout.split('\n').filter((line) => !/^\\(un)?restrict\b/.test(line));
  const meta = lines.find((line) => line.startsWith('\\'));
  if (meta) throw new Error(`pg_restore emitted a psql meta-command we cannot run: ${meta.slice(0, 40)}`);
  return lines.join('\n');
}

export async function restoreParallel(
  ctx: ToolContext,
  target: ConnInfo,
  options: RestoreOptions & { jobs: number },
): Promise<void> {
  const args = [
    ...restoreFlags(options),
    `--jobs=${options.jobs}`,
    '--exit-on-error',
    dbnameArg(target),
    options.file,
  ];
  try {
    await runTool(ctx, 'pg_restore', args, target);
  } catch (error) {
    if (error instanceof MigrationError) throw error;
    throw new MigrationError(
      'SCHEMA_RESTORE_FAILED',
      `pg_restore (${options.section}) failed on the target: ${(error as Error).message}`,
      'Fix the cause named above on the target, then run the command again with --resume: objects already built are skipped.',
      { cause: error },
    );
  }
}

export interface TocEntry {
  line: string;
  type: string;
  schema: string;
  name: string;
}

/** Parses `pg_restore -l` output ("12; 1259 16390 INDEX public idx_x postgres"). */
export async function listToc(
  ctx: ToolContext,
  file: string,
  section: 'pre-data' | 'post-data',
): Promise<TocEntry[]> {
  const { stdout } = await runTool(ctx, 'pg_restore', ['--list', `--section=${section}`, file], undefined);
  const types = [
    'FK CONSTRAINT',
    'CONSTRAINT',
    'INDEX ATTACH',
    'INDEX',
    'TRIGGER',
    'RULE',
    'POLICY',
    'MATERIALIZED VIEW DATA',
  ];
  const entries: TocEntry[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.trim() || line.startsWith(';')) continue;
    const match = /^\d+; \d+ \d+ (.*)$/.exec(line);
    if (!match?.[1]) continue;
    const type = types.find((t) => match[1]?.startsWith(`${t} `)) ?? match[1].split(' ')[0] ?? '';
    const rest = match[1].slice(type.length + 1);
    const [schema = '', ...nameParts] = rest.split(' ');
    // The owner is the last word; names may contain spaces (a constraint's "table name").
    nameParts.pop();
    entries.push({ line, type, schema, name: nameParts.join(' ') });
  }
  return entries;
}

/** Roles as pg_dumpall prints them, without passwords (so it also works on managed services). */
export async function dumpRoles(ctx: ToolContext, source: ConnInfo): Promise<string> {
  try {
    const { stdout } = await runTool(
      ctx,
      'pg_dumpall',
      [
        '--roles-only',
        '--no-role-passwords',
        `--database=dbname=${quoteLiteral(source.keywords.dbname ?? 'postgres')}`,
      ],
      source,
    );
    return stdout;
  } catch (error) {
    if (error instanceof MigrationError) throw error;
    throw new MigrationError(
      'SCHEMA_DUMP_FAILED',
      `pg_dumpall --roles-only failed on the source: ${(error as Error).message}`,
      'Fix the cause named above, or copy without roles: --skip-roles (implies --no-owner).',
      { cause: error },
    );
  }
}
