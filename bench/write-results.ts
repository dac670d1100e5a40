// Writes a benchmark's report as `<kind>-<UTC timestamp>.json` and `.md` under the results folder.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function writeResults(
  kind: 'copy' | 'replay' | 'timescale',
  report: unknown,
  markdown: string,
  resultsDir: string,
  startedAt: Date,
): Promise<{ jsonPath: string; markdownPath: string }> {
  await mkdir(resultsDir, { recursive: true });
  // ISO 8601 basic format (20250101T120000Z): no colons, so the names are safe on every file system.
  const stamp = startedAt
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const jsonPath = join(resultsDir, `${kind}-${stamp}.json`);
  const markdownPath = join(resultsDir, `${kind}-${stamp}.md`);
  await writeFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(markdownPath, markdown);
  return { jsonPath, markdownPath };
}
