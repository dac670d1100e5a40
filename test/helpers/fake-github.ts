// A fake of GitHub for the Action on 127.0.0.1: the REST endpoints it uses (the artifacts of a workflow
// run, an artifact's zip as a 302 to the fake artifact service's signed blob URL, workflow_dispatch), and
// the runner's side of a step (inputs through action.yml's env mapping, GITHUB_* files).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { FakeArtifactService } from './fake-artifacts';

export interface Dispatch {
  owner: string;
  repo: string;
  workflow: string;
  ref: string;
  inputs: Record<string, string>;
  atMs: number;
}

export interface FakeGitHub {
  /** GITHUB_API_URL. */
  url: string;
  dispatches: Dispatch[];
  requests: { method: string; path: string; authorized: boolean }[];
  close(): Promise<void>;
}

export async function startFakeGitHub(options: {
  artifacts: FakeArtifactService;
  /** The token the API accepts (the job's GITHUB_TOKEN). */
  token: string;
  owner: string;
  repo: string;
  /** Workflow files that exist (dispatching another is a 404, as on GitHub). */
  workflows: string[];
}): Promise<FakeGitHub> {
  const dispatches: Dispatch[] = [];
  const requests: FakeGitHub['requests'] = [];
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const notFound = (res: ServerResponse) =>
    json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const auth = req.headers.authorization ?? '';
    const authorized = auth === `token ${options.token}` || auth === `Bearer ${options.token}`;
    requests.push({ method: req.method ?? '', path: url.pathname, authorized });
    if (!authorized) return json(res, 401, { message: 'Bad credentials' });
    const repoPath = `/repos/${options.owner}/${options.repo}`;
    if (!url.pathname.startsWith(`${repoPath}/`)) return notFound(res);
    const rest = url.pathname.slice(repoPath.length);

    let m = /^\/actions\/runs\/(\d+)\/artifacts$/.exec(rest);
    if (m && req.method === 'GET') {
      const runId = Number(m[1]);
      const name = url.searchParams.get('name') ?? undefined;
      const perPage = Number(url.searchParams.get('per_page') ?? 30);
      const page = Number(url.searchParams.get('page') ?? 1);
      const all = options.artifacts.artifacts({ runId, ...(name ? { name } : {}) });
      const slice = all.slice((page - 1) * perPage, page * perPage);
      return json(res, 200, {
        total_count: all.length,
        artifacts: slice.map((a) => ({
          id: a.id,
          node_id: `MDg6QXJ0aWZhY3Q${a.id}`,
          name: a.name,
          size_in_bytes: a.size,
          url: `${fake.url}${repoPath}/actions/artifacts/${a.id}`,
          archive_download_url: `${fake.url}${repoPath}/actions/artifacts/${a.id}/zip`,
          expired: false,
          digest: a.digest,
          created_at: a.createdAt.toISOString(),
          updated_at: a.createdAt.toISOString(),
          expires_at: new Date(a.createdAt.getTime() + 90 * 86_400_000).toISOString(),
          workflow_run: { id: a.runId, repository_id: 1, head_repository_id: 1, head_branch: 'main' },
        })),
      });
    }
    m = /^\/actions\/artifacts\/(\d+)\/zip$/.exec(rest);
    if (m && req.method === 'GET') {
      const artifact = options.artifacts.artifacts().find((a) => a.id === Number(m?.[1]));
      if (!artifact) return notFound(res);
      res.writeHead(302, { location: options.artifacts.signedDownloadUrl(artifact), 'content-length': '0' });
      res.end();
      return;
    }
    m = /^\/actions\/workflows\/([^/]+)\/dispatches$/.exec(rest);
    if (m && req.method === 'POST') {
      const workflow = decodeURIComponent(m[1] ?? '');
      if (!options.workflows.includes(workflow)) return notFound(res);
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as {
        ref?: string;
        inputs?: Record<string, unknown>;
      };
      if (!body.ref) return json(res, 422, { message: 'Invalid request.\n\n"ref" wasn\'t supplied.' });
      const inputs = body.inputs ?? {};
      if (Object.values(inputs).some((v) => typeof v !== 'string'))
        return json(res, 422, { message: 'Invalid request: inputs must be strings.' });
      dispatches.push({
        owner: options.owner,
        repo: options.repo,
        workflow,
        ref: body.ref,
        inputs: inputs as Record<string, string>,
        atMs: Date.now(),
      });
      res.writeHead(204);
      res.end();
      return;
    }
    return notFound(res);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: Error) => json(res, 500, { message: error.message }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const fake: FakeGitHub = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    dispatches,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return fake;
}

// ---- The runner side: a step of action.yml run the way the runner runs it. ----

export interface ActionJob {
  /** GITHUB_RUN_ID. */
  runId: number;
  /** ACTIONS_RUNTIME_TOKEN, as crazy-max/ghaction-github-runtime exports it (absent: artifacts off). */
  runtimeToken?: string;
  resultsUrl?: string;
  apiUrl: string;
  repository: string;
  githubToken: string;
  refName: string;
  /** RUNNER_TEMP of the job (each job of a real run gets a fresh one). */
  runnerTemp: string;
}

export interface ActionStepResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** GITHUB_STEP_SUMMARY after the step. */
  summary: string;
  /** GITHUB_OUTPUT after the step, parsed. */
  outputs: Record<string, string>;
}

export interface ActionStep {
  child: ChildProcess;
  result: Promise<ActionStepResult>;
  output(): string;
}

/**
 * Runs action.yml's node step as the runner would: inputs from `with` (else the input's default, with
 * its github.* expression evaluated), passed through the step's own `env:` mapping, plus the GITHUB_*
 * variables and files of a job. The first step (the runtime exporter) is stood in for by `job`.
 */
export function startActionStep(
  root: string,
  job: ActionJob,
  withInputs: Record<string, string>,
): ActionStep {
  const action = parseYaml(readFileSync(join(root, 'action.yml'), 'utf8')) as {
    inputs: Record<string, { default?: string }>;
    runs: { steps: { uses?: string; env?: Record<string, string>; run?: string }[] };
  };
  for (const name of Object.keys(withInputs)) {
    if (!(name in action.inputs)) throw new Error(`action.yml has no input '${name}'`);
  }
  const github: Record<string, string> = {
    token: job.githubToken,
    ref_name: job.refName,
    action_path: root,
  };
  const evaluate = (text: string, inputs: Record<string, string>) =>
    text.replace(/\$\{\{\s*(inputs|github|runner)\.([\w-]+)\s*\}\}/g, (_, scope: string, key: string) => {
      const table = scope === 'inputs' ? inputs : scope === 'github' ? github : { temp: job.runnerTemp };
      const value = (table as Record<string, string>)[key];
      if (value === undefined)
        throw new Error(`action.yml uses ${scope}.${key}, which this runner does not know`);
      return value;
    });
  const inputs: Record<string, string> = {};
  for (const [name, spec] of Object.entries(action.inputs)) {
    inputs[name] = withInputs[name] ?? evaluate(String(spec.default ?? ''), {});
  }
  const step = action.runs.steps.find((s) => s.run);
  if (!step?.env || !step.run) throw new Error('action.yml has no run step with env');
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(GITHUB_|INPUT_|ACTIONS_|RUNNER_)/.test(key)) env[key] = value;
  }
  for (const [key, value] of Object.entries(step.env)) env[key] = evaluate(value, inputs);
  mkdirSync(job.runnerTemp, { recursive: true });
  const files = mkdtempSync(join(job.runnerTemp, 'step-'));
  const summaryFile = join(files, 'summary.md');
  const outputFile = join(files, 'output');
  writeFileSync(summaryFile, '');
  writeFileSync(outputFile, '');
  Object.assign(env, {
    GITHUB_ACTIONS: 'true',
    CI: 'true',
    GITHUB_RUN_ID: String(job.runId),
    GITHUB_RUN_ATTEMPT: '1',
    GITHUB_RUN_NUMBER: '1',
    GITHUB_REPOSITORY: job.repository,
    GITHUB_API_URL: job.apiUrl,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_REF_NAME: job.refName,
    GITHUB_WORKSPACE: job.runnerTemp,
    GITHUB_STEP_SUMMARY: summaryFile,
    GITHUB_OUTPUT: outputFile,
    GITHUB_ENV: join(files, 'env'),
    RUNNER_TEMP: job.runnerTemp,
    // The fakes listen on loopback: no proxy of the machine may stand in between.
    NO_PROXY: '127.0.0.1,localhost',
    no_proxy: '127.0.0.1,localhost',
    ...(job.runtimeToken ? { ACTIONS_RUNTIME_TOKEN: job.runtimeToken } : {}),
    ...(job.resultsUrl ? { ACTIONS_RESULTS_URL: `${job.resultsUrl}/` } : {}),
  });
  // `run: node "${{ github.action_path }}/dist/action.js"`, without a shell in between.
  const script = /node "([^"]+)"/.exec(evaluate(step.run, inputs))?.[1];
  if (!script) throw new Error(`unexpected run line: ${step.run}`);
  const child = spawn(process.execPath, [script], {
    cwd: job.runnerTemp,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const result = new Promise<ActionStepResult>((resolvePromise) => {
    child.on('close', (code, signal) => {
      resolvePromise({
        code,
        signal,
        stdout,
        stderr,
        summary: readFileSync(summaryFile, 'utf8'),
        outputs: parseOutputFile(readFileSync(outputFile, 'utf8')),
      });
    });
  });
  return { child, result, output: () => stdout + stderr };
}

/** GITHUB_OUTPUT as @actions/core writes it: `name<<delimiter`, the value, the delimiter. */
export function parseOutputFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i] ?? '');
    if (m?.[1] && m[2]) {
      const value: string[] = [];
      for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i] ?? '');
      out[m[1]] = value.join('\n');
    } else if (lines[i]?.includes('=')) {
      const [k, ...v] = (lines[i] ?? '').split('=');
      if (k) out[k] = v.join('=');
    }
  }
  return out;
}
