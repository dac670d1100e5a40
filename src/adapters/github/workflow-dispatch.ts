// Starts the next run of a workflow through the GitHub REST API (workflow_dispatch), the way a replay
// segment hands over to the next job before its runner's time is up.
import { getOctokit } from '@actions/github';

export interface WorkflowDispatch {
  token: string;
  owner: string;
  repo: string;
  /** The workflow's file name (live-migration.yml) or numeric id. */
  workflow: string;
  /** Branch or tag the new run uses. */
  ref: string;
  /** workflow_dispatch inputs; GitHub takes strings (and refuses inputs the workflow does not declare). */
  inputs: Record<string, string>;
}

/** Resolves once GitHub accepted the dispatch (204); rejects with GitHub's message otherwise. */
export async function createWorkflowDispatch(d: WorkflowDispatch): Promise<void> {
  const octokit = getOctokit(d.token);
  await octokit.rest.actions.createWorkflowDispatch({
    owner: d.owner,
    repo: d.repo,
    workflow_id: d.workflow,
    ref: d.ref,
    inputs: d.inputs,
  });
}
