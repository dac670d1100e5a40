// The work folder (--dir: logs, reports, schema dump, state.json) kept between jobs and runs as a workflow
// artifact, through @actions/artifact. A journal only: the databases are the truth, so every failure here
// is reported to the caller as a warning and never stops a migration.
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Artifact, DefaultArtifactClient } from '@actions/artifact';
import { z } from 'zod';

export const STATE_FILE = 'state.json';

/** One artifact name per migration, so jobs and runs of the same migration find each other's state. */
export function stateArtifactName(migrationId: string): string {
  return `pg-live-migrate-${migrationId}-state`;
}

/** An earlier workflow run, read through the REST API with a token that may read its artifacts. */
export interface RunRef {
  runId: number;
  owner: string;
  repo: string;
  token: string;
}

/** What state.json records: where the truth is (the target's control schema) and what was last seen. */
export const stateFileSchema = z.object({
  migrationId: z.string(),
  phase: z.string(),
  appliedLsn: z.string().optional(),
  /** host:port/dbname of the target; never a user or password. */
  targetHost: z.string(),
  controlSchema: z.string(),
  savedAt: z.string(),
  runId: z.number().int().nullable(),
  runAttempt: z.number().int().nullable().optional(),
  command: z.string().optional(),
});
export type StateFile = z.infer<typeof stateFileSchema>;

export async function writeStateFile(dir: string, state: StateFile): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

export const PLAN_FILE = 'plan.json';

/** The copy plan as the target recorded it (parts, ranges, what is done), for a human reading the artifact. */
export async function writePlanFile(dir: string, plan: unknown): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, PLAN_FILE), `${JSON.stringify(plan, null, 2)}\n`);
}

/** The state file of `dir`, or a reason why there is none usable. */
export async function readStateFile(dir: string): Promise<{ state?: StateFile; problem?: string }> {
  let text: string;
  try {
    text = await readFile(join(dir, STATE_FILE), 'utf8');
  } catch {
    return { problem: `no ${STATE_FILE}` };
  }
  try {
    const parsed = stateFileSchema.safeParse(JSON.parse(text));
    return parsed.success ? { state: parsed.data } : { problem: `${STATE_FILE} is not in the expected form` };
  } catch {
    return { problem: `${STATE_FILE} is not valid JSON` };
  }
}

const findBy = (run: RunRef) => ({
  findBy: {
    token: run.token,
    workflowRunId: run.runId,
    repositoryOwner: run.owner,
    repositoryName: run.repo,
  },
});

/**
 * The newest artifact called `name` in this run (Actions runtime token) or in `run` (REST). Listing
 * rather than getArtifact: a missing artifact is the normal first run, not a failure worth an annotation.
 */
export async function findStateArtifact(name: string, run?: RunRef): Promise<Artifact | undefined> {
  const client = new DefaultArtifactClient();
  const { artifacts } = await client.listArtifacts(run ? { latest: true, ...findBy(run) } : { latest: true });
  return artifacts.filter((a) => a.name === name).sort((a, b) => b.id - a.id)[0];
}

export interface RestoredState {
  artifactId: number;
  files: number;
  state?: StateFile;
  problem?: string;
}

/**
 * Downloads the artifact into `dir` (through a staging folder in `scratch`, the job's temporary folder,
 * which the runner empties even when the job is killed), keeping any file that is already there (this job's own files are
 * newer than any journal).
 */
export async function restoreStateArtifact(
  artifact: Artifact,
  dir: string,
  scratch: string,
  run?: RunRef,
): Promise<RestoredState> {
  const client = new DefaultArtifactClient();
  await mkdir(scratch, { recursive: true });
  const staging = await mkdtemp(join(scratch, 'plm-restore-'));
  try {
    await client.downloadArtifact(artifact.id, { path: staging, ...(run ? findBy(run) : {}) });
    const files = await listFiles(staging);
    await mkdir(dir, { recursive: true });
    await cp(staging, dir, { recursive: true, force: false, errorOnExist: false });
    const { state, problem } = await readStateFile(staging);
    return {
      artifactId: artifact.id,
      files: files.length,
      ...(state ? { state } : {}),
      ...(problem ? { problem } : {}),
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Uploads `dir` as `name` in this run. An artifact name is unique within a run and artifacts are
 * immutable, so an earlier one of the same name (an earlier job or checkpoint of this run) is first
 * downloaded and merged under this job's files, then replaced: files only that job wrote (its log) stay.
 */
export async function saveStateArtifact(
  name: string,
  dir: string,
  scratch: string,
  warn: (message: string) => void,
): Promise<{ id: number | undefined; size: number | undefined; files: number }> {
  // Two jobs of a run may save at the same moment (the cutover job and the replaying one): the loser of
  // the race finds the name taken or already deleted, and merges again with the winner's artifact.
  for (let attempt = 1; ; attempt++) {
    try {
      return await mergeAndUpload(name, dir, scratch, warn);
    } catch (error) {
      if (attempt >= 3) throw error;
      await new Promise((r) => setTimeout(r, 500 + Math.random() * 1500));
    }
  }
}

async function mergeAndUpload(
  name: string,
  dir: string,
  scratch: string,
  warn: (message: string) => void,
): Promise<{ id: number | undefined; size: number | undefined; files: number }> {
  const client = new DefaultArtifactClient();
  await mkdir(scratch, { recursive: true });
  const staging = await mkdtemp(join(scratch, 'plm-save-'));
  try {
    const previous = await findStateArtifact(name);
    if (previous) {
      await client
        .downloadArtifact(previous.id, { path: staging })
        .catch((error: Error) =>
          warn(
            `Could not read this run's earlier state artifact (${error.message}); saving this job's files only.`,
          ),
        );
    }
    await cp(dir, staging, { recursive: true, force: true });
    const files = await listFiles(staging);
    if (previous) await client.deleteArtifact(name);
    const { id, size } = await client.uploadArtifact(name, files, staging);
    return { id, size, files: files.length };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const path = join(root, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}
