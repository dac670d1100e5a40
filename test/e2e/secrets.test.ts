import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePort } from '../../src/adapters/postgres/local-cluster';
import {
  assertNoLeaks,
  type CliResult,
  freshDatabases,
  type Pair,
  query,
  requireScram,
  runCli,
  startPair,
} from '../helpers/clusters';

// Characters that must be URI-encoded, so both spellings of the secret are looked for.
const PASSWORD = 'S3cr3t/Pa55:w0rd@XYZ';
const WRONG = 'Wr0ng/Guess:n0t@ABC';
const USER = 'secret_owner';

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** The secret, raw or URI-encoded, in none of stdout, stderr or the files under --dir. */
async function expectNowhere(secret: string, result: CliResult, dir: string): Promise<void> {
  const spellings = [secret, encodeURIComponent(secret)];
  for (const s of spellings) {
    expect(result.stdout).not.toContain(s);
    expect(result.stderr).not.toContain(s);
  }
  for (const file of await filesUnder(dir)) {
    const content = await readFile(file, 'latin1');
    for (const s of spellings) expect(content.includes(s), `${s} in ${file}`).toBe(false);
  }
}

describe('secrets stay out of output and work files', () => {
  let pair: Pair;
  let uris: { source: string; target: string };
  let sourceWithPassword: string;
  const dirs: string[] = [];
  const workDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'plm-secrets-'));
    dirs.push(dir);
    return dir;
  };

  beforeAll(async () => {
    pair = await startPair();
    uris = await freshDatabases(pair, 'shop');
    await query(uris.source, 'CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1), (2)');
    await requireScram(pair, USER, PASSWORD, { superuser: true });
    sourceWithPassword = `postgresql://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${pair.source.port}/shop`;
  });

  afterAll(async () => {
    // Stop the cluster even when the leak check fails, so a failing run leaves no server behind.
    try {
      if (pair) await assertNoLeaks(pair);
    } finally {
      await pair?.stop();
      for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    }
  });

  it('copy to a target whose port is closed fails without printing or storing the source password', async () => {
    const dir = await workDir();
    const closed = await findFreePort();
    const result = await runCli([
      'copy',
      '--source',
      sourceWithPassword,
      '--target',
      `postgresql://postgres@127.0.0.1:${closed}/shop`,
      '--dir',
      dir,
      '--json',
    ]);
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('error CONNECTION_FAILED');
    await expectNowhere(PASSWORD, result, dir);
  });

  it('preflight with a wrong password reports SOURCE_AUTH_FAILED without the password, in text and --json', async () => {
    const wrongSource = `postgresql://${USER}:${encodeURIComponent(WRONG)}@127.0.0.1:${pair.source.port}/shop`;
    for (const json of [[], ['--json']]) {
      const dir = await workDir();
      const result = await runCli([
        'preflight',
        '--source',
        wrongSource,
        '--target',
        uris.target,
        '--dir',
        dir,
        ...json,
      ]);
      expect(result.code).toBe(3);
      expect(result.stderr).toContain('SOURCE_AUTH_FAILED');
      expect(result.stderr).toContain(`postgresql://${USER}:********@127.0.0.1`);
      await expectNowhere(WRONG, result, dir);
    }
  });

  it('a wrong PGPASSWORD from the environment is masked too', async () => {
    const dir = await workDir();
    const result = await runCli(
      [
        'preflight',
        '--json',
        '--source',
        pair.source.uri('shop', USER),
        '--target',
        uris.target,
        '--dir',
        dir,
      ],
      { env: { PGPASSWORD: WRONG } },
    );
    expect(result.code).toBe(3);
    expect(JSON.parse(result.stdout).findings[0]).toMatchObject({ code: 'SOURCE_AUTH_FAILED' });
    await expectNowhere(WRONG, result, dir);
  });

  it('a preflight that reads the whole source and fails on the target keeps the password out of the report', async () => {
    const dir = await workDir();
    const closed = await findFreePort();
    const result = await runCli([
      'preflight',
      '--json',
      '--source',
      sourceWithPassword,
      '--target',
      `postgresql://postgres@127.0.0.1:${closed}/shop`,
      '--dir',
      dir,
    ]);
    expect(result.code).toBe(3);
    const codes = JSON.parse(result.stdout).findings.map((f: { code: string }) => f.code);
    expect(codes).toContain('TARGET_UNREACHABLE');
    expect(codes).toContain('SERVER_VERSIONS');
    await expectNowhere(PASSWORD, result, dir);
  });

  it('a pg_dump that prints its environment cannot leak the password through copy, and clean removes the rest', async () => {
    const dir = await workDir();
    const bin = await workDir();
    for (const tool of ['pg_dump', 'pg_dumpall', 'pg_restore']) {
      // A stand-in for a tool that fails loudly, echoing its arguments and password to stderr.
      await writeFile(
        join(bin, tool),
        `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "${tool} (PostgreSQL) 99.0"; exit 0; fi\necho "${tool} failed: password=$PGPASSWORD args=$*" >&2\nexit 1\n`,
      );
      await chmod(join(bin, tool), 0o755);
    }
    const target = uris.target;
    try {
      for (const extra of [['--skip-roles'], []]) {
        const result = await runCli([
          'copy',
          '--source',
          sourceWithPassword,
          '--target',
          target,
          '--dir',
          dir,
          '--pg-bindir',
          bin,
          ...extra,
        ]);
        expect(result.code).not.toBe(0);
        // The tool's stderr reached the message, with the password masked.
        expect(result.stderr).toMatch(/pg_dump(all)? failed: password=\*{8}/);
        await expectNowhere(PASSWORD, result, dir);
        const clean = await runCli([
          'clean',
          '--source',
          sourceWithPassword,
          '--target',
          target,
          '--dir',
          dir,
        ]);
        expect(clean.code).toBe(0);
        await expectNowhere(PASSWORD, clean, dir);
      }
    } finally {
      await runCli(['clean', '--source', uris.source, '--target', target, '--dir', dir]);
    }
  });
});
