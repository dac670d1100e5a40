// `demo`: the whole story between two throwaway local clusters, so a newcomer sees every step once:
// preflight → snapshot + copy → validate --checksum → clean --prune. Live replay joins in the next release.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withClient } from '../adapters/postgres/client';
import { parseConnInfo } from '../adapters/postgres/connection';
import { findPgBinDir, type LocalCluster, startLocalCluster } from '../adapters/postgres/local-cluster';
import { MigrationError } from '../core/errors';
import { formatDuration } from '../core/format';
import type { WorkflowContext } from '../ports';
import { runClean } from './clean';
import { runCopy } from './copy';
import { runPreflight } from './preflight';
import { renderPreflightText } from './preflight-render';
import { runValidate } from './validate';
import { renderValidationText } from './validate-render';

export interface DemoOptions {
  keep: boolean;
  dir: string;
  env: NodeJS.ProcessEnv;
  tableJobs: number;
  /** Where the text reports go (the CLI passes stderr). */
  print: (text: string) => void;
}

/** datasets/pagila next to the bundle (dist/../datasets) or the sources (src/workflows/../../datasets). */
function findPagila(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'datasets', 'pagila');
    if (existsSync(join(candidate, 'pagila-schema.sql'))) return candidate;
    dir = dirname(dir);
  }
  throw new MigrationError(
    'INTERNAL',
    'The pagila dataset is missing from this installation.',
    'Reinstall pg-live-migrate from its repository.',
  );
}

export async function runDemo(ctx: WorkflowContext, options: DemoOptions): Promise<number> {
  const started = ctx.clock.nowMs();
  const say = (message: string) => ctx.emit({ type: 'log', level: 'info', message });
  const binDir = await findPgBinDir(options.env);
  if (!binDir) {
    throw new MigrationError(
      'PG_TOOL_NOT_FOUND',
      'No PostgreSQL server binaries (initdb, pg_ctl) were found on this machine.',
      'Install PostgreSQL (e.g. apt-get install postgresql) or set PG_BINDIR to the folder holding initdb.',
    );
  }
  const pagila = findPagila();
  const workDir = join(options.dir, 'demo');
  await mkdir(workDir, { recursive: true });
  const clusters: LocalCluster[] = [];
  let keep = false;
  try {
    say(`Starting two throwaway clusters with ${binDir} …`);
    const [source, target] = await Promise.all([
      startLocalCluster({ name: 'demo-source', binDir }),
      startLocalCluster({ name: 'demo-target', binDir }),
    ]);
    clusters.push(source, target);
    const psql = (cluster: LocalCluster, args: string[]) =>
      cluster.run('psql', [
        '-h',
        '127.0.0.1',
        '-p',
        String(cluster.port),
        '-U',
        'postgres',
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        ...args,
      ]);
    for (const cluster of clusters) await psql(cluster, ['-c', 'CREATE DATABASE pagila']);
    say('Loading the pagila sample database into the source …');
    await psql(source, ['-d', 'pagila', '-f', join(pagila, 'pagila-schema.sql')]);
    await psql(source, ['-d', 'pagila', '-f', join(pagila, 'pagila-data.sql')]);
    await psql(source, ['-d', 'pagila', '-c', 'REFRESH MATERIALIZED VIEW rental_by_category; ANALYZE']);

    const endpoints = {
      source: parseConnInfo(source.uri('pagila'), 'source'),
      target: parseConnInfo(target.uri('pagila'), 'target'),
    };
    const common = { migrationId: 'demo', dir: workDir, json: false, pgBindir: binDir, schemas: null };

    say('Step 1/4 preflight');
    const preflight = await runPreflight(ctx, endpoints, common);
    options.print(renderPreflightText(preflight));
    if (!preflight.ok) return 3;

    say('Step 2/4 snapshot + copy');
    const copy = await runCopy(ctx, endpoints, {
      ...common,
      tableJobs: options.tableJobs,
      indexJobs: options.tableJobs,
      splitTablesLargerThan: 1024 ** 3,
      skipSchema: false,
      skipRoles: false,
      noOwner: false,
      resume: false,
    });
    say(`Copied ${copy.rows} rows of ${copy.tables} tables in ${formatDuration(copy.seconds * 1000)}.`);

    say('Step 3/4 validate --checksum (the source is quiet in this demo)');
    const report = await runValidate(ctx, endpoints, {
      ...common,
      checksum: true,
      markdown: undefined,
      buckets: 16,
    });
    options.print(renderValidationText(report));

    if (options.keep) {
      keep = true;
      options.print(
        [
          '',
          'Clusters left running (--keep):',
          `  source: psql "${source.uri('pagila')}"`,
          `  target: psql "${target.uri('pagila')}"`,
          `  stop:   ${join(binDir, 'pg_ctl')} -D ${source.dataDir} stop; ${join(binDir, 'pg_ctl')} -D ${target.dataDir} stop`,
          `  clean:  pg-live-migrate clean --migration-id demo --source "${source.uri('pagila')}" --target "${target.uri('pagila')}"`,
          '',
        ].join('\n'),
      );
      return report.ok ? 0 : 5;
    }
    say('Step 4/4 clean --prune');
    await runClean(ctx, endpoints, { ...common, prune: true });
    await withClient(endpoints.source, async (c) => {
      const { rowCount } = await c.query('SELECT 1 FROM pg_replication_slots');
      if (rowCount)
        throw new MigrationError('INTERNAL', 'The demo left a replication slot behind.', 'Report this bug.');
    });
    say(
      `Demo finished in ${formatDuration(ctx.clock.nowMs() - started)}: ${report.ok ? 'source and target match' : 'MISMATCH'}.`,
    );
    return report.ok ? 0 : 5;
  } finally {
    if (!keep) await Promise.all(clusters.map((c) => c.stop()));
  }
}
