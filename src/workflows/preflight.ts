// `preflight`: read-only checks of both databases and this machine. (Being written.)

import type { CommonOptions } from '../config/options';
import type { PreflightReport } from '../core/preflight';
import type { WorkflowContext } from '../ports';
import type { Endpoints } from './connections';

export async function runPreflight(
  _ctx: WorkflowContext,
  _endpoints: Endpoints,
  _options: CommonOptions,
): Promise<PreflightReport> {
  return { ok: true, findings: [] };
}
