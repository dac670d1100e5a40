// A fake GitHub REST API on 127.0.0.1 for the bot's GitHub App: workflow runs (waiting ones with their
// pending deployments), the run's deployment_protection_rule endpoint (approve, reject, status report)
// and workflow_dispatch. Speaks JSON over HTTP like api.github.com, so Octokit is exercised for real.
import { type KeyObject, verify } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRun {
  id: number;
  name: string;
  displayTitle: string;
  status: 'waiting' | 'in_progress' | 'completed';
  /** Environments whose deployment waits for protection rules. */
  waitingEnvironments: string[];
}

export interface GitHubCall {
  method: string;
  path: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
}

export interface FakeGitHub {
  url: string;
  calls: GitHubCall[];
  runs: FakeRun[];
  /** Reviews posted on deployment_protection_rule endpoints. */
  reviews(): { runId: number; body: Record<string, unknown> }[];
  dispatches(): { workflow: string; body: Record<string, unknown> }[];
  /** Installation tokens minted for a valid App JWT. */
  mintedTokens(): number;
  close(): Promise<void>;
}

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });

/** Checks a GitHub App JWT (RS256, iss = app id) the way GitHub does, against the App's public key. */
function verifyAppJwt(
  authorization: string | undefined,
  app: { appId: string; publicKey: KeyObject },
): boolean {
  const jwt = /^bearer (.+)$/i.exec(authorization ?? '')?.[1];
  const [header, payload, signature] = jwt?.split('.') ?? [];
  if (!header || !payload || !signature) return false;
  const ok = verify(
    'RSA-SHA256',
    Buffer.from(`${header}.${payload}`),
    app.publicKey,
    Buffer.from(signature, 'base64url'),
  );
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as {
    iss?: string | number;
    exp?: number;
  };
  return ok && String(claims.iss) === app.appId && (claims.exp ?? 0) * 1000 > Date.now();
}

export async function startFakeGitHub(o: {
  owner: string;
  repo: string;
  token: string;
  /** Serve POST /app/installations/:id/access_tokens: a valid App JWT gets `token`. */
  app?: { appId: string; installationId: number; publicKey: KeyObject };
}): Promise<FakeGitHub> {
  const calls: GitHubCall[] = [];
  let mintedTokens = 0;
  const runs: FakeRun[] = [];
  let url = '';
  const runJson = (r: FakeRun) => ({
    id: r.id,
    name: r.name,
    display_title: r.displayTitle,
    status: r.status,
    html_url: `https://github.example/${o.owner}/${o.repo}/actions/runs/${r.id}`,
    url: `${url}/repos/${o.owner}/${o.repo}/actions/runs/${r.id}`,
  });
  const server: Server = createServer(async (req, res) => {
    const text = await readBody(req);
    const parsed = new URL(req.url ?? '/', 'http://x');
    const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    calls.push({
      method: req.method ?? '',
      path: parsed.pathname,
      body,
      authorization: req.headers.authorization,
    });
    const json = (status: number, value?: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(value === undefined ? '' : JSON.stringify(value));
    };
    if (
      o.app &&
      req.method === 'POST' &&
      parsed.pathname === `/app/installations/${o.app.installationId}/access_tokens`
    ) {
      if (!verifyAppJwt(req.headers.authorization, o.app))
        return json(401, { message: 'A JSON web token could not be decoded' });
      mintedTokens += 1;
      return json(201, {
        token: o.token,
        expires_at: new Date(Date.now() + 3600_000).toISOString(),
        permissions: {},
      });
    }
    if (req.headers.authorization !== `token ${o.token}`) return json(401, { message: 'Bad credentials' });
    const base = `/repos/${o.owner}/${o.repo}/actions`;
    const p = parsed.pathname;
    if (req.method === 'GET' && p === `${base}/runs`) {
      const status = parsed.searchParams.get('status');
      const list = runs.filter((r) => !status || r.status === status).sort((a, b) => b.id - a.id);
      const perPage = Number(parsed.searchParams.get('per_page') ?? 30);
      return json(200, { total_count: list.length, workflow_runs: list.slice(0, perPage).map(runJson) });
    }
    const pending = new RegExp(`^${base}/runs/(\\d+)/pending_deployments$`).exec(p);
    if (req.method === 'GET' && pending) {
      const run = runs.find((r) => r.id === Number(pending[1]));
      if (!run) return json(404, { message: 'Not Found' });
      return json(
        200,
        run.waitingEnvironments.map((name, i) => ({
          environment: { id: 100 + i, name },
          wait_timer: 0,
          current_user_can_approve: false,
          reviewers: [],
        })),
      );
    }
    const gate = new RegExp(`^${base}/runs/(\\d+)/deployment_protection_rule$`).exec(p);
    if (req.method === 'POST' && gate) {
      const run = runs.find((r) => r.id === Number(gate[1]));
      if (!run?.waitingEnvironments.includes(String(body.environment_name)))
        return json(422, { message: 'No pending deployment for this environment' });
      if (body.state === 'approved' || body.state === 'rejected') {
        run.waitingEnvironments = run.waitingEnvironments.filter((e) => e !== body.environment_name);
        run.status = body.state === 'approved' ? 'in_progress' : 'completed';
      }
      return json(204);
    }
    const dispatch = new RegExp(`^${base}/workflows/([^/]+)/dispatches$`).exec(p);
    if (req.method === 'POST' && dispatch) return json(204);
    return json(404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    calls,
    runs,
    mintedTokens: () => mintedTokens,
    reviews: () =>
      calls
        .filter((c) => c.method === 'POST' && c.path.endsWith('/deployment_protection_rule'))
        .map((c) => ({ runId: Number(/runs\/(\d+)\//.exec(c.path)?.[1]), body: c.body })),
    dispatches: () =>
      calls
        .filter((c) => c.method === 'POST' && c.path.endsWith('/dispatches'))
        .map((c) => ({
          workflow: decodeURIComponent(/workflows\/([^/]+)\//.exec(c.path)?.[1] ?? ''),
          body: c.body,
        })),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
