// Cleanup on Ctrl-C / SIGTERM for the benchmarks: what must be undone (child process groups, clusters)
// registers here, and the entry point runs every registered cleanup once before it exits.

type Cleanup = () => Promise<void> | void;

const cleanups = new Set<Cleanup>();
let interruptedBy: NodeJS.Signals | undefined;

/** Registers a cleanup to run on interrupt; call the returned function once the resource is gone. */
export function onInterrupt(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}

export function isInterrupted(): boolean {
  return interruptedBy !== undefined;
}

/** Throws when an interrupt arrived, so a benchmark stops between steps instead of starting new work. */
export function throwIfInterrupted(): void {
  if (interruptedBy) throw new Error(`interrupted by ${interruptedBy}`);
}

/** Runs every registered cleanup (newest first, so processes die before their cluster stops); idempotent. */
export async function runInterruptCleanups(signal: NodeJS.Signals): Promise<void> {
  if (interruptedBy) return;
  interruptedBy = signal;
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      await cleanup();
    } catch {
      // Best effort: one failed cleanup must not keep the others (stopping the clusters) from running.
    }
  }
}
