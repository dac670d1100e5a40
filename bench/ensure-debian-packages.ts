// Installs the Debian packages a benchmark needs but the machine lacks (GNU `time` for peak RSS,
// `pgcopydb` as a peer), once per run: `apt-get update` only when something is missing.
import { findOnPath, runCommand } from './run-command.js';

export interface DebianPackageWish {
  name: string;
  /** True when the package is already usable (e.g. its binary exists). */
  isPresent(): boolean;
}

export interface DebianPackageReport {
  name: string;
  status: 'present' | 'installed' | 'unavailable';
  detail?: string;
}

export async function ensureDebianPackages(
  wishes: readonly DebianPackageWish[],
  log: (line: string) => void,
): Promise<DebianPackageReport[]> {
  const missing = wishes.filter((wish) => !wish.isPresent());
  const reports: DebianPackageReport[] = wishes
    .filter((wish) => !missing.includes(wish))
    .map((wish) => ({ name: wish.name, status: 'present' }));
  if (missing.length === 0) return reports;
  const aptGet = findOnPath('apt-get');
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!aptGet || !isRoot) {
    const why = aptGet ? 'not root, so apt-get cannot install' : 'no apt-get on this machine';
    return [
      ...reports,
      ...missing.map((wish) => ({ name: wish.name, status: 'unavailable' as const, detail: why })),
    ];
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  log(`apt-get update (missing: ${missing.map((wish) => wish.name).join(', ')})`);
  await runCommand({ file: aptGet, args: ['update'], env, timeoutMs: 300_000 });
  for (const wish of missing) {
    log(`apt-get install -y ${wish.name}`);
    const outcome = await runCommand({
      file: aptGet,
      args: ['install', '-y', wish.name],
      env,
      timeoutMs: 600_000,
    });
    if (outcome.exitCode === 0 && wish.isPresent()) {
      reports.push({ name: wish.name, status: 'installed' });
    } else {
      const tail = outcome.stderrTail.trim().split('\n').at(-1) ?? '';
      reports.push({ name: wish.name, status: 'unavailable', detail: `apt-get install failed: ${tail}` });
    }
  }
  return reports;
}
