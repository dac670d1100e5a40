// Runs the benchmarks: bundles bench/run.ts with esbuild (no TypeScript loader needed at run time) and
// starts the bundle with the remaining arguments, forwarding signals and passing its exit code through.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, stop } from 'esbuild';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const outfile = join(root, 'bench', '.build', 'run.mjs');

await build({
  entryPoints: [join(root, 'bench', 'run.ts')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  outfile,
  sourcemap: 'inline',
  logLevel: 'warning',
});
// End esbuild's service process now rather than leave it to exit with us.
await stop();

const child = spawn(process.execPath, ['--enable-source-maps', outfile, ...process.argv.slice(2)], {
  stdio: 'inherit',
});
// The bench cleans up (stops its clusters) on SIGINT/SIGTERM; stay alive until it has, then exit like it.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => child.kill(signal));
}
child.on('exit', (code, signal) => {
  process.exit(code ?? (signal === 'SIGINT' ? 130 : 1));
});
