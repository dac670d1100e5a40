// What a step says to the Actions runner through @actions/core: masks, outputs, the job summary and
// annotated log lines. The runner reads these from stdout and the GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files.
import * as core from '@actions/core';

/** Asks the runner to mask a value in every later log line (and its URI-encoded form). */
export function maskSecret(secret: string | undefined): void {
  if (!secret) return;
  core.setSecret(secret);
  const encoded = encodeURIComponent(secret);
  if (encoded !== secret) core.setSecret(encoded);
}

export function setOutputs(outputs: Record<string, string>): void {
  for (const [name, value] of Object.entries(outputs)) core.setOutput(name, value);
}

/** Replaces this step's job summary with `markdown` (already redacted and capped by the caller). */
export async function writeJobSummary(markdown: string): Promise<void> {
  await core.summary.emptyBuffer().addRaw(markdown, true).write({ overwrite: true });
}

export function annotate(level: 'warning' | 'error' | 'notice', message: string): void {
  if (level === 'warning') core.warning(message);
  else if (level === 'error') core.error(message);
  else core.notice(message);
}
