// `demo`: the whole story between two throwaway local clusters. (Being written.)
import type { WorkflowContext } from '../ports';

export async function runDemo(
  _ctx: WorkflowContext,
  _options: { keep: boolean; dir: string; env: NodeJS.ProcessEnv; tableJobs: number },
): Promise<number> {
  return 0;
}
