// The bot's GitHub side over the REST API (Octokit from @actions/github): find the run whose cutover job
// waits on the bot's custom deployment protection rule, approve or reject it (or post a status report on
// it) through the run's deployment_protection_rule endpoint, dispatch the command workflow as a fallback,
// and link the latest run. Credentials: the GitHub App's id, private key and installation id (installation
// tokens minted and refreshed by @octokit/auth-app; they last one hour), or a ready token (GITHUB_TOKEN).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { getOctokit } from '@actions/github';
import { createAppAuth } from '@octokit/auth-app';
import { request } from '@octokit/request';
import type { GitHubRuns, WaitingGate } from '../../core/slack-ports';

export type GitHubCredentials =
  | { kind: 'token'; token: string }
  | { kind: 'app'; appId: string; privateKey: string; installationId: number };

export interface GitHubRunsOptions {
  credentials: GitHubCredentials;
  owner: string;
  repo: string;
  /** REST base URL (https://api.github.com, a GHES …/api/v3, or a fake in tests). */
  apiUrl: string;
  /** The workflow dispatched with `command` inputs (fallback for cutover; validate and clean). */
  workflow: string;
  ref: string;
  /** The environment whose custom protection rule is the bot's. */
  environment: string;
}

/** A token for the next call: the fixed one, or the App's installation token (cached, renewed before it expires). */
function tokenSource(o: GitHubRunsOptions): () => Promise<string> {
  const credentials = o.credentials;
  if (credentials.kind === 'token') return async () => credentials.token;
  const auth = createAppAuth({
    appId: credentials.appId,
    privateKey: credentials.privateKey,
    installationId: credentials.installationId,
    request: request.defaults({ baseUrl: o.apiUrl.replace(/\/$/, '') }),
  });
  return async () => (await auth({ type: 'installation' })).token;
}

export function createGitHubRuns(o: GitHubRunsOptions): GitHubRuns {
  const nextToken = tokenSource(o);
  const client = async () =>
    getOctokit(await nextToken(), { baseUrl: o.apiUrl.replace(/\/$/, ''), request: { retries: 0 } });
  const repo = { owner: o.owner, repo: o.repo };
  return {
    async dispatch(inputs) {
      await (await client()).rest.actions.createWorkflowDispatch({
        ...repo,
        workflow_id: o.workflow,
        ref: o.ref,
        inputs,
      });
    },
    async findWaitingGate(migrationId) {
      const { data } = await (await client()).rest.actions.listWorkflowRunsForRepo({
        ...repo,
        status: 'waiting',
        per_page: 20,
      });
      const candidates: (WaitingGate & { title: string })[] = [];
      for (const run of data.workflow_runs) {
        const { data: pending } = await (await client()).rest.actions.getPendingDeploymentsForRun({
          ...repo,
          run_id: run.id,
        });
        if (!pending.some((p) => p.environment.name === o.environment)) continue;
        candidates.push({
          runId: run.id,
          environment: o.environment,
          runUrl: run.html_url,
          title: `${run.display_title ?? ''} ${run.name ?? ''}`,
        });
      }
      // A run that names the migration wins; otherwise only an unambiguous single waiting run is taken
      // (approving another migration's cutover would be far worse than asking for a dispatch).
      const named = candidates.filter((c) =>
        new RegExp(`(^|[^a-z0-9_])${migrationId}([^a-z0-9_]|$)`).test(c.title),
      );
      const chosen = named[0] ?? (candidates.length === 1 ? candidates[0] : undefined);
      return chosen
        ? { runId: chosen.runId, environment: chosen.environment, runUrl: chosen.runUrl }
        : undefined;
    },
    async reviewGate(gate, verdict, comment) {
      await (await client()).rest.actions.reviewCustomGatesForRun({
        ...repo,
        run_id: gate.runId,
        ...(verdict
          ? { environment_name: gate.environment, state: verdict, comment }
          : { environment_name: gate.environment, comment }),
      } as Parameters<ReturnType<typeof getOctokit>['rest']['actions']['reviewCustomGatesForRun']>[0]);
    },
    async latestRunUrl() {
      const { data } = await (await client()).rest.actions.listWorkflowRunsForRepo({ ...repo, per_page: 1 });
      return data.workflow_runs[0]?.html_url;
    },
  };
}

/** Checks a webhook delivery's X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the secret). */
export function isValidGitHubSignature(secret: string, rawBody: string, header: string | undefined): boolean {
  if (!header?.startsWith('sha256=')) return false;
  const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(rawBody).digest('hex')}`);
  const given = Buffer.from(header);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The run id in a deployment_protection_rule event's callback URL (…/actions/runs/<id>/deployment_protection_rule). */
export function parseCallbackRunId(callbackUrl: string | undefined): number | undefined {
  const match = /\/actions\/runs\/(\d+)\/deployment_protection_rule$/.exec(callbackUrl ?? '');
  return match ? Number(match[1]) : undefined;
}
