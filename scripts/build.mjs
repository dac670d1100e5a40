// Bundles src/entry/*.ts into dist/ with esbuild; `--check` fails when the committed dist/ is stale.
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { updateReadme } from './docs.mjs';

const check = process.argv.includes('--check');
const entries = readdirSync('src/entry').filter((f) => f.endsWith('.ts'));
const outdir = check ? await mkdtemp(join(tmpdir(), 'plm-dist-')) : 'dist';
await build({
  entryPoints: entries.map((f) => `src/entry/${f}`),
  outdir,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // pg's optional native binding is never used; keep the bundle self-contained otherwise.
  external: ['pg-native'],
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __plmCreateRequire } from 'node:module';\nconst require = __plmCreateRequire(import.meta.url);",
  },
  legalComments: 'none',
  logLevel: 'warning',
});
const readmeFresh = await updateReadme({ check });
if (check) {
  if (!readmeFresh) {
    console.error(
      'README.md troubleshooting tables are out of date: run npm run build and commit README.md.',
    );
    process.exit(1);
  }
  const stale = entries
    .map((f) => f.replace(/\.ts$/, '.js'))
    .filter((f) => {
      try {
        return readFileSync(join(outdir, f), 'utf8') !== readFileSync(join('dist', f), 'utf8');
      } catch {
        return true;
      }
    });
  await rm(outdir, { recursive: true, force: true });
  if (stale.length) {
    console.error(`dist/ is out of date (${stale.join(', ')}): run npm run build and commit dist/.`);
    process.exit(1);
  }
}
