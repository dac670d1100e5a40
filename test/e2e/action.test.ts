// The Action run as the runner runs it (action.yml's env mapping, GITHUB_* files, the runtime token), one
// command per job of one workflow run, against real clusters and fakes of the artifact service and the
// REST API: the job summaries and outputs of every command, and a planted password found nowhere.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  checkAndStop,
  createRandom,
  createWriterTables,
  freshDatabases,
  type Pair,
  query,
  ROOT,
  startPair,
  startWriter,
  waitFor,
} from '../helpers/clusters';
import {
  type FakeArtifactService,
  type FakeRun,
  readZip,
  startFakeArtifactService,
} from '../helpers/fake-artifacts';
import {
  type ActionStep,
  type ActionStepResult,
  type FakeGitHub,
  startActionStep,
  startFakeGitHub,
} from '../helpers/fake-github';

const PASSWORD = 'Pl4nted_S3cret_pw';
const GITHUB_TOKEN = 'ghs_PlantedTokenForTheFakeApi0123';
const MIGRATION_ID = 'action_steps';
const ARTIFACT = `pg-live-migrate-${MIGRATION_ID}-state`;

let pair: Pair;
let artifacts: FakeArtifactService;
let github: FakeGitHub;
let source: string;
let target: string;
let temp: string;
let run: FakeRun;
const steps: ActionStep[] = [];
const results: ActionStepResult[] = [];

/** Each call is one job of run 101: its own runtime token and RUNNER_TEMP, as on GitHub. */
function job(command: string, inputs: Record<string, string> = {}): ActionStep {
  const jobRun = artifacts.createJob(run);
  const step = startActionStep(
    ROOT,
    {
      runId: run.runId,
      runtimeToken: jobRun.token,
      resultsUrl: artifacts.url,
      apiUrl: github.url,
      repository: 'acme/shop',
      githubToken: GITHUB_TOKEN,
      refName: 'main',
      runnerTemp: mkdtempSync(join(temp, `${command}-`)),
    },
    { command, source, target, 'migration-id': MIGRATION_ID, ...inputs },
  );
  steps.push(step);
  step.result.then((r) => results.push(r));
  return step;
}

async function finished(step: ActionStep): Promise<ActionStepResult> {
  const r = await step.result;
  if (r.code !== 0) throw new Error(`step failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

function artifactFiles(): Map<string, string> {
  const [latest] = artifacts.artifacts({ runId: run.runId, name: ARTIFACT });
  if (!latest?.blob) throw new Error('no state artifact');
  return new Map([...readZip(latest.blob)].map(([name, data]) => [name, data.toString('utf8')]));
}

beforeAll(async () => {
  pair = await startPair();
  artifacts = await startFakeArtifactService();
  github = await startFakeGitHub({
    artifacts,
    token: GITHUB_TOKEN,
    owner: 'acme',
    repo: 'shop',
    workflows: ['live-migration.yml'],
  });
  run = artifacts.createRun(101);
  temp = mkdtempSync(join(tmpdir(), 'plm-action-'));
  const dbs = await freshDatabases(pair, 'action_steps');
  const withPassword = (uri: string) => uri.replace('postgres@', `postgres:${PASSWORD}@`);
  source = withPassword(dbs.source);
  target = withPassword(dbs.target);
  await createWriterTables(dbs.source, 3000);
  await query(
    dbs.source,
    `CREATE TABLE "Odd | name" (id int PRIMARY KEY, note text);
     INSERT INTO "Odd | name" SELECT g, 'n' || g FROM generate_series(1, 50) g`,
  );
});

afterAll(async () => {
  for (const step of steps) if (step.child.exitCode === null) step.child.kill('SIGKILL');
  await artifacts?.close();
  await github?.close();
  if (temp) rmSync(temp, { recursive: true, force: true });
  if (pair) await checkAndStop(pair);
});

describe('the GitHub Action, one command per job', () => {
  it('action.yml exports the runtime first, then passes every input the way @actions/core reads it', () => {
    const action = parseYaml(readFileSync(join(ROOT, 'action.yml'), 'utf8')) as {
      inputs: Record<string, unknown>;
      outputs: Record<string, { value: string }>;
      runs: {
        using: string;
        steps: { id?: string; uses?: string; env?: Record<string, string>; run?: string }[];
      };
    };
    expect(action.runs.using).toBe('composite');
    const [runtime, engine] = action.runs.steps;
    expect(runtime?.uses).toBe('crazy-max/ghaction-github-runtime@v3');
    expect(engine?.run).toBe(`node "\${{ github.action_path }}/dist/action.js"`);
    // core.getInput(name) reads INPUT_ + name upper-cased with spaces as underscores (hyphens stay).
    const expected = Object.fromEntries(
      Object.keys(action.inputs).map((name) => [
        `INPUT_${name.replace(/ /g, '_').toUpperCase()}`,
        `\${{ inputs.${name} }}`,
      ]),
    );
    expect(engine?.env).toEqual(expected);
    for (const name of [
      'phase',
      'lag-bytes',
      'validation-ok',
      'report-path',
      'segment-ended',
      'next-run-dispatched',
    ])
      expect(action.outputs[name]?.value).toBe(`\${{ steps.${engine?.id}.outputs.${name} }}`);
  });

  it('masks every secret before it prints anything else', async () => {
    const r = await finished(job('preflight'));
    const lines = r.stdout.split('\n');
    const masks = lines.findIndex((l) => !l.startsWith('::add-mask::'));
    const masked = lines.slice(0, masks).map((l) => l.slice('::add-mask::'.length));
    expect(masked).toEqual(expect.arrayContaining([PASSWORD, GITHUB_TOKEN, source, target]));
  });

  it('preflight: the findings with their code, severity and fix, and the outputs', async () => {
    const r = results[0] as ActionStepResult;
    expect(r.summary).toContain(`## pg-live-migrate \`preflight\`: migration \`${MIGRATION_ID}\``);
    expect(r.summary).toContain('✅ Preflight passed');
    expect(r.summary).toContain('| Severity | Code | Observed | Fix |');
    expect(r.summary).toMatch(/\| ℹ️ info \| `SERVER_VERSIONS` \|/);
    expect(r.outputs).toMatchObject({
      phase: 'none',
      'validation-ok': '',
      'segment-ended': 'false',
      'next-run-dispatched': 'false',
    });
    expect(readFileSync(r.outputs['report-path'] as string, 'utf8')).toContain(
      '| Severity | Code | Observed | Fix |',
    );
    expect(artifactFiles().get('state.json')).toContain('"phase": "none"');
  });

  it("copy: rows, bytes, seconds and rate per table, and the state saved with every job's log", async () => {
    const r = await finished(job('copy', { 'table-jobs': '2', 'index-jobs': '2' }));
    expect(r.summary).toContain('✅ Copy finished: 3 tables');
    expect(r.summary).toContain('| table | rows | bytes | seconds | rate |');
    expect(r.summary).toMatch(/\| `public\.items` \| 3,000 \| [\d.]+ kB \| [\d.]+ \| [\d.]+ (kB|MB)\/s \|/);
    expect(r.summary).toMatch(/\| `public\."Odd \\\| name"` \| 50 \|/);
    expect(r.outputs.phase).toMatch(/^(copy|replay)$/);
    const files = artifactFiles();
    // The artifact of this run merges the jobs' work folders: the preflight job's log is still there.
    expect([...files.keys()]).toEqual(
      expect.arrayContaining([
        'state.json',
        'plan.json',
        'logs/preflight.log',
        'logs/copy.log',
        'reports/copy.md',
      ]),
    );
    const state = JSON.parse(files.get('state.json') ?? '{}');
    expect(state).toMatchObject({ migrationId: MIGRATION_ID, runId: 101, controlSchema: '_pg_live_migrate' });
    expect(state.targetHost).toMatch(/^127\.0\.0\.1:\d+\/action_steps$/);
    const plan = JSON.parse(files.get('plan.json') ?? '{}');
    expect(plan.parts).toHaveLength(3);
    expect(plan.parts.every((p: { done: boolean }) => p.done)).toBe(true);
  });

  it('replay charts the lag; cutover reports its timings; both say the validation passed', async () => {
    const writer = startWriter(source, { random: createRandom(7), prefilled: 3000, pauseMs: 5 });
    const replay = job('replay', { 'lag-interval': '1s' });
    try {
      await waitFor(
        async () => {
          const rows = await query<{ n: number }>(
            target,
            `SELECT count(*)::int AS n FROM _pg_live_migrate.replay WHERE migration_id = $1 AND heartbeat_at > now() - interval '3 s' AND source_lsn IS NOT NULL`,
            [MIGRATION_ID],
          );
          return rows[0]?.n === 1;
        },
        { timeoutMs: 30_000, what: 'the replay to report its lag' },
      );
      await new Promise((r) => setTimeout(r, 3000)); // a few lag reports under the write load
    } finally {
      await writer.stop();
    }
    const cutover = await finished(job('cutover', { checksum: 'true', 'max-lag': '16MB' }));
    const replayed = await finished(replay);

    expect(cutover.summary).toMatch(/✅ Cutover completed in [\d.]+s at `[0-9A-F]+\/[0-9A-F]+`/);
    expect(cutover.summary).toContain('| validation | row counts and checksums: ✅ match |');
    expect(cutover.outputs).toMatchObject({ 'validation-ok': 'true', phase: 'done' });

    expect(replayed.summary).toContain('✅ Migration completed');
    expect(replayed.summary).toContain('### Replay');
    expect(replayed.summary).toMatch(
      /```mermaid\nxychart-beta\n {2}title "Replay lag"\n {2}x-axis "time since the first report" \[".*"\]\n {2}y-axis "lag \((B|kB|MB)\)"\n {2}line \[[\d., ]+\]\n```/,
    );
    expect(replayed.summary).toMatch(/\| source WAL rate \| [\d.]+ (B|kB|MB)\/s \|/);
    expect(replayed.summary).toMatch(/\| replay rate \| [\d.]+ (B|kB|MB)\/s \|/);
    expect(replayed.summary).toContain('### Cutover');
    for (const step of ['requested', 'drained', 'sequences', 'validation', 'done'])
      expect(replayed.summary).toMatch(new RegExp(`\\| ${step} \\|[^\\n]*\\| [\\d.]+ \\|`));
    expect(replayed.outputs).toMatchObject({
      phase: 'done',
      'validation-ok': 'true',
      'segment-ended': 'false',
    });
    expect(replayed.outputs['lag-bytes']).toMatch(/^\d+$/);
  });

  it('validate: a one-line verdict on top of a table with ✅ per table', async () => {
    const r = await finished(job('validate', { checksum: 'true' }));
    const lines = r.summary.split('\n');
    expect(lines[0]).toBe(`## pg-live-migrate \`validate\`: migration \`${MIGRATION_ID}\``);
    expect(lines[2]).toBe('✅ Validation passed: 3 tables match.');
    expect(r.summary).toContain('| table | source rows | target rows | checksum | ok |');
    expect(r.summary).toMatch(/\| `public\.items` \| [\d,]+ \| [\d,]+ \| match \| ✅ \|/);
    expect(r.summary).not.toContain('❌');
    expect(r.outputs['validation-ok']).toBe('true');
    // The live-source warning is in the validation report, not repeated under Warnings.
    expect(r.summary.match(/exported snapshot is not held/g)).toHaveLength(1);
    const report = JSON.parse(
      readFileSync(join(r.outputs['report-path'] as string, '../validate.json'), 'utf8'),
    );
    expect(report).toMatchObject({ ok: true, checksum: true });
  });

  it('status and clean: the phase as the target records it, then nothing left', async () => {
    const status = await finished(job('status'));
    expect(status.outputs.phase).toBe('done');
    expect(status.summary).toContain('| phase | done (copy finished) |');
    const clean = await finished(job('clean', { prune: 'true' }));
    expect(clean.summary).toContain('🧹 Cleaned');
    expect(clean.outputs.phase).toBe('none');
    expect(await query(pair.source.uri(), 'SELECT slot_name FROM pg_replication_slots')).toEqual([]);
  });

  it('a failing command fails the step with its code and hint in the summary', async () => {
    const r = await job('replay', { 'migration-id': 'never_started' }).result;
    expect(r.code).toBe(4);
    expect(r.summary).toContain('❌ `replay` failed with `MIGRATION_NOT_FOUND`');
    expect(r.summary).toContain('**What to do:**');
    expect(r.stdout).toContain('::error::MIGRATION_NOT_FOUND');
  });

  it('the planted password and token appear in no summary, output, log or artifact', async () => {
    const seen: string[] = [];
    for (const r of results) {
      const stdout = r.stdout
        .split('\n')
        .filter((l) => !l.startsWith('::add-mask::'))
        .join('\n');
      seen.push(stdout, r.stderr, r.summary, JSON.stringify(r.outputs));
    }
    for (const artifact of artifacts.artifacts()) {
      for (const data of readZip(artifact.blob as Buffer).values()) seen.push(data.toString('latin1'));
    }
    const walk = (dir: string): string[] =>
      readdirSync(dir).flatMap((name) => {
        const path = join(dir, name);
        return statSync(path).isDirectory() ? walk(path) : [path];
      });
    for (const file of walk(temp)) seen.push(readFileSync(file, 'latin1'));
    expect(seen.length).toBeGreaterThan(20);
    expect(existsSync(temp)).toBe(true);
    for (const text of seen) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(GITHUB_TOKEN);
    }
  });
});
