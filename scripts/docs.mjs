// Generates the README's troubleshooting tables from the code tables in src/core (errors and preflight
// findings), so the documentation cannot drift from the codes. `--check` fails when README is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const START = '<!-- codes:start -->';
const END = '<!-- codes:end -->';

async function loadCodes() {
  const result = await build({
    stdin: {
      contents:
        "export { ERROR_CODES, ExitCode } from './src/core/errors.ts'; export { FINDING_CODES } from './src/core/preflight.ts';",
      resolveDir: process.cwd(),
      loader: 'ts',
    },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'node',
    logLevel: 'warning',
  });
  const source = result.outputFiles[0].text;
  return import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
}

export async function renderCodes() {
  const { ERROR_CODES, ExitCode, FINDING_CODES } = await loadCodes();
  const cell = (text) => String(text).replaceAll('|', '\\|');
  const errors = Object.entries(ERROR_CODES).map(
    ([code, [category, text]]) => `| \`${code}\` | ${ExitCode[category]} (${category}) | ${cell(text)} |`,
  );
  const findings = Object.entries(FINDING_CODES ?? {}).map(
    ([code, text]) => `| \`${code}\` | ${cell(text)} |`,
  );
  return [
    START,
    'Errors (any command):',
    '',
    '| code | exit | meaning |',
    '| --- | --- | --- |',
    ...errors,
    '',
    'Preflight findings (`preflight --json` lists each with its severity, the observed value and the fix):',
    '',
    '| code | meaning |',
    '| --- | --- |',
    ...findings,
    END,
  ].join('\n');
}

export async function updateReadme({ check }) {
  const readme = readFileSync('README.md', 'utf8');
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md lacks the ${START} … ${END} markers`);
  const next = readme.slice(0, start) + (await renderCodes()) + readme.slice(end + END.length);
  if (next === readme) return true;
  if (check) return false;
  writeFileSync('README.md', next);
  return true;
}
