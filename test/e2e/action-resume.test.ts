// The Action across workflow runs, under a write load: a job killed mid-replay is resumed by the next run
// from the previous run's state artifact (downloaded through the REST API), and a replay segment that
// ends dispatches the next run itself. Each ends with equal checksums and every writer row exactly once.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkAndStop,
  createRandom,
  createWriterTables,
  diffSequences,
  freshDatabases,
  type Pair,
  query,
  ROOT,
  startPair,
  startWriter,
  waitFor,
} from '../helpers/clusters';
import { type FakeArtifactService, type FakeRun, startFakeArtifactService } from '../helpers/fake-artifacts';
import {
  type ActionStep,
  type ActionStepResult,
  type FakeGitHub,
  startActionStep,
  startFakeGitHub,
} from '../helpers/fake-github';

const GITHUB_TOKEN = 'ghs_ResumeTokenForTheFakeApi456789';
const PREFILLED = 5000;

let pair: Pair;
let artifacts: FakeArtifactService;
let github: FakeGitHub;
let temp: string;
const steps: ActionStep[] = [];

function step(run: FakeRun, inputs: Record<string, string>): ActionStep {
  const job = artifacts.createJob(run);
  const started = startActionStep(
    ROOT,
    {
      runId: run.runId,
      runtimeToken: job.token,
      resultsUrl: artifacts.url,
      apiUrl: github.url,
      repository: 'acme/shop',
      githubToken: GITHUB_TOKEN,
      refName: 'main',
      runnerTemp: mkdtempSync(join(temp, `run-${run.runId}-`)),
    },
    inputs,
  );
  steps.push(started);
  return started;
}

async function succeeded(s: ActionStep): Promise<ActionStepResult> {
  const r = await s.result;
  if (r.code !== 0) throw new Error(`step failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Until the replay of `s` (its process) has reported its lag within the last seconds. */
async function replayLive(target: string, id: string, s: ActionStep): Promise<void> {
  await waitFor(
    async () => {
      const rows = await query<{ n: number }>(
        target,
        `SELECT count(*)::int AS n FROM _pg_live_migrate.replay r JOIN _pg_live_migrate.migration m USING (migration_id)
          WHERE migration_id = $1 AND m.phase = 'replay' AND r.heartbeat_at > now() - interval '3 s'
            AND r.source_lsn IS NOT NULL AND r.process = $2`,
        [id, `pid ${s.child.pid}`],
      );
      return rows[0]?.n === 1;
    },
    { timeoutMs: 60_000, what: `the replay of ${id} to run` },
  );
}

/** Cutover and validation through the action in `run`, then the writer's rows compared one by one. */
async function finish(run: FakeRun, replay: ActionStep, db: { source: string; target: string }, id: string) {
  const common = { source: db.source, target: db.target, 'migration-id': id };
  const cutover = await succeeded(
    step(run, { ...common, command: 'cutover', checksum: 'true', 'max-lag': '64MB' }),
  );
  expect(cutover.outputs['validation-ok']).toBe('true');
  const replayed = await succeeded(replay);
  expect(replayed.outputs).toMatchObject({ phase: 'done', 'validation-ok': 'true' });
  const validated = await succeeded(step(run, { ...common, command: 'validate', checksum: 'true' }));
  expect(validated.summary).toContain('✅ Validation passed');
  expect(validated.outputs['validation-ok']).toBe('true');
  for (const table of ['items', 'audit']) {
    const diff = await diffSequences(db.source, db.target, table);
    expect(diff.counts).toEqual({ missing: 0, extra: 0, duplicated: 0 });
  }
  await succeeded(step(run, { ...common, command: 'clean' }));
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
  temp = mkdtempSync(join(tmpdir(), 'plm-action-resume-'));
});

afterAll(async () => {
  for (const s of steps)
    if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  await artifacts?.close();
  await github?.close();
  if (temp) rmSync(temp, { recursive: true, force: true });
  if (pair) await checkAndStop(pair);
});

describe('the GitHub Action across workflow runs', () => {
  it("resumes a killed job in the next run from the previous run's artifacts, with equal checksums", async () => {
    const id = 'killed';
    const db = await freshDatabases(pair, 'action_killed');
    await createWriterTables(db.source, PREFILLED);
    const writer = startWriter(db.source, { random: createRandom(11), prefilled: PREFILLED, pauseMs: 5 });
    const common = { source: db.source, target: db.target, 'migration-id': id, 'lag-interval': '1s' };
    try {
      // Run A: the copy, a checkpoint of the state, the live replay; then the runner dies.
      const runA = artifacts.createRun(201);
      const a = step(runA, { ...common, command: 'migrate', 'table-jobs': '2' });
      await waitFor(() => artifacts.artifacts({ runId: 201 }).length === 1, {
        timeoutMs: 60_000,
        what: "run A's checkpoint of the state",
      });
      await replayLive(db.target, id, a);
      a.child.kill('SIGKILL');
      const killed = await a.result;
      expect(killed.signal).toBe('SIGKILL');
      await waitFor(
        async () =>
          (await query<{ active: boolean }>(pair.source.uri(), 'SELECT active FROM pg_replication_slots'))[0]
            ?.active === false,
        { timeoutMs: 10_000, what: 'the slot to be released' },
      );

      // Run B: restores A's state through the REST API, resumes from the target, and finishes.
      const runB = artifacts.createRun(202);
      const b = step(runB, { ...common, command: 'migrate', 'resume-run-id': '201' });
      await replayLive(db.target, id, b);
      expect(b.output()).toMatch(
        /Restored state artifact pg-live-migrate-killed-state from run 201 \(\d+ files; phase (copy|replay)/,
      );
      expect(github.requests).toEqual(
        expect.arrayContaining([
          { method: 'GET', path: '/repos/acme/shop/actions/runs/201/artifacts', authorized: true },
          expect.objectContaining({
            method: 'GET',
            path: expect.stringMatching(/^\/repos\/acme\/shop\/actions\/artifacts\/\d+\/zip$/),
          }),
        ]),
      );
      await new Promise((r) => setTimeout(r, 2000));
      await writer.stop();
      await finish(runB, b, db, id);
      const resumed = await b.result;
      expect(resumed.summary).toContain('State restored from run 201');
      // Run A's journal goes on in run B's work folder (and so in B's artifact).
      const log = readFileSync(
        join(resumed.outputs['report-path'] as string, '../../logs/migrate.log'),
        'utf8',
      );
      expect(log).toContain('copy done');
      expect(log).toContain('Restored state artifact pg-live-migrate-killed-state from run 201');
    } finally {
      await writer.stop();
    }
  });

  it('a cancelled job (SIGINT, as the runner cancels) stops at a safe point and still saves its state', async () => {
    const id = 'cancelled';
    const db = await freshDatabases(pair, 'action_cancelled');
    await createWriterTables(db.source, 1000);
    const common = { source: db.source, target: db.target, 'migration-id': id, 'lag-interval': '1s' };
    const run = artifacts.createRun(401);
    const migrate = step(run, { ...common, command: 'migrate' });
    await replayLive(db.target, id, migrate);
    migrate.child.kill('SIGINT');
    const r = await migrate.result;
    expect(r.code).toBe(4);
    expect(r.summary).toContain('⏹️ Replay stopped (the job was cancelled)');
    expect(r.outputs).toMatchObject({ phase: 'replay', 'segment-ended': 'false' });
    expect(r.stdout).toContain('Saved state artifact pg-live-migrate-cancelled-state');
    const [saved] = artifacts.artifacts({ runId: 401 });
    expect(saved).toBeDefined();
    await succeeded(step(run, { ...common, command: 'clean' }));
  });

  it('ends a replay segment under a write load, dispatches the next run, which finishes with equal checksums', async () => {
    const id = 'segmented';
    const db = await freshDatabases(pair, 'action_segmented');
    await createWriterTables(db.source, PREFILLED);
    const writer = startWriter(db.source, { random: createRandom(12), prefilled: PREFILLED, pauseMs: 5 });
    const common = { source: db.source, target: db.target, 'migration-id': id, 'lag-interval': '1s' };
    try {
      const runA = artifacts.createRun(301);
      const a = await succeeded(
        step(runA, {
          ...common,
          command: 'migrate',
          segment: '5s',
          'dispatch-inputs': JSON.stringify({ migration_id: id, resume_run_id: '', checksum: true }),
        }),
      );
      expect(a.outputs).toMatchObject({
        'segment-ended': 'true',
        'next-run-dispatched': 'true',
        phase: 'replay',
      });
      expect(a.summary).toContain('⏸️ Replay segment ended after 5.0s');
      expect(a.summary).toContain(
        '⏭️ Dispatched the next run of `live-migration.yml` on `main` with resume_run_id 301',
      );
      expect(github.dispatches).toHaveLength(1);
      const dispatch = github.dispatches[0];
      expect(dispatch).toMatchObject({
        workflow: 'live-migration.yml',
        ref: 'main',
        inputs: { migration_id: id, resume_run_id: '301', checksum: 'true' },
      });
      // The state was saved before the next run was asked for, so that run finds it.
      const [saved] = artifacts.artifacts({ runId: 301 });
      expect(saved?.createdAt.getTime()).toBeLessThanOrEqual(dispatch?.atMs ?? 0);

      // The writes go on between the runs; the dispatched run picks up from the target.
      await new Promise((r) => setTimeout(r, 1500));
      const runB = artifacts.createRun(302);
      const b = step(runB, {
        ...common,
        command: 'migrate',
        resume: 'true',
        'resume-run-id': dispatch?.inputs.resume_run_id ?? '',
      });
      await replayLive(db.target, id, b);
      await new Promise((r) => setTimeout(r, 2000));
      await writer.stop();
      await finish(runB, b, db, id);
      expect((await b.result).summary).toContain('State restored from run 301');
    } finally {
      await writer.stop();
    }
  });
});
