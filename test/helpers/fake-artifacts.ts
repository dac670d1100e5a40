// A fake of the Actions artifact service on 127.0.0.1, speaking what @actions/artifact v6 speaks: Twirp
// JSON (github.actions.results.api.v1.ArtifactService) authorised by the runtime token's JWT claims, and
// Azure block-blob uploads/downloads through signed URLs (stageBlock, commitBlockList, GET).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inflateRawSync } from 'node:zlib';

const SERVICE = 'github.actions.results.api.v1.ArtifactService';

export interface FakeRun {
  /** The numeric run id GitHub shows (GITHUB_RUN_ID, REST). */
  runId: number;
  /** The results service's ids for the run and the job, carried in the runtime token's `scp` claim. */
  runBackendId: string;
  jobBackendId: string;
  /** ACTIONS_RUNTIME_TOKEN for this job. */
  token: string;
}

export interface StoredArtifact {
  id: number;
  runId: number;
  runBackendId: string;
  jobBackendId: string;
  name: string;
  finalized: boolean;
  size: number;
  digest: string | undefined;
  createdAt: Date;
  blob: Buffer | undefined;
  uploadSig: string;
  downloadSig: string;
}

export interface FakeArtifactService {
  /** ACTIONS_RESULTS_URL. */
  url: string;
  /** A new run (and its first job) with its runtime token. */
  createRun(runId: number): FakeRun;
  /** Another job of the same run: its own runtime token, the run's artifacts. */
  createJob(run: FakeRun): FakeRun;
  /** Finalized artifacts, oldest first. */
  artifacts(filter?: { runId?: number; name?: string }): StoredArtifact[];
  /** A signed download URL (what GitHub's REST API redirects to). */
  signedDownloadUrl(artifact: StoredArtifact): string;
  /** Every Twirp call and blob request, for assertions. */
  calls: { method: string; path: string }[];
  close(): Promise<void>;
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** Twirp's error body and status. */
function twirpError(res: ServerResponse, status: number, code: string, msg: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ code, msg }));
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startFakeArtifactService(): Promise<FakeArtifactService> {
  const runs = new Map<string, FakeRun>(); // by token
  const stored: StoredArtifact[] = [];
  const blocks = new Map<number, Map<string, Buffer>>(); // staged blocks per artifact id
  const calls: { method: string; path: string }[] = [];
  let nextId = 1000;
  let url = '';

  const blobPath = (a: StoredArtifact) =>
    `/devstoreaccount1/actions-results/${a.runBackendId}/${a.id}/${encodeURIComponent(a.name)}.zip`;
  const signed = (a: StoredArtifact, permission: 'r' | 'w') =>
    `${url}${blobPath(a)}?sv=2023-11-03&se=2099-01-01T00%3A00%3A00Z&sr=b&sp=${permission}&sig=${encodeURIComponent(permission === 'w' ? a.uploadSig : a.downloadSig)}`;

  const monolith = (a: StoredArtifact) => ({
    workflow_run_backend_id: a.runBackendId,
    workflow_job_run_backend_id: a.jobBackendId,
    database_id: String(a.id),
    name: a.name,
    size: String(a.size),
    created_at: a.createdAt.toISOString(),
    ...(a.digest ? { digest: a.digest } : {}),
  });

  const twirp = async (req: IncomingMessage, res: ServerResponse, method: string) => {
    const auth = req.headers.authorization ?? '';
    const run = runs.get(auth.replace(/^Bearer /, ''));
    if (!run) return twirpError(res, 401, 'unauthenticated', 'invalid runtime token');
    if (!String(req.headers['content-type']).startsWith('application/json'))
      return twirpError(res, 415, 'malformed', 'this fake speaks Twirp JSON only');
    const body = JSON.parse((await readBody(req)).toString('utf8') || '{}') as Record<string, unknown>;
    // A job may read and delete any artifact of its run (the request then names the job that made it),
    // but creates, finalizes and lists as itself.
    const asItself = ['CreateArtifact', 'FinalizeArtifact', 'ListArtifacts'].includes(method);
    if (
      body.workflow_run_backend_id !== run.runBackendId ||
      (asItself && body.workflow_job_run_backend_id !== run.jobBackendId)
    )
      return twirpError(res, 403, 'permission_denied', 'backend ids do not match the token');
    const inRun = stored.filter((a) => a.runBackendId === run.runBackendId && a.finalized);
    const reply = (value: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    switch (method) {
      case 'CreateArtifact': {
        const name = String(body.name ?? '');
        if (Number(body.version) !== 7)
          return twirpError(res, 400, 'invalid_argument', 'unsupported version');
        if (stored.some((a) => a.runBackendId === run.runBackendId && a.name === name))
          return twirpError(
            res,
            409,
            'already_exists',
            'an artifact with this name already exists on the workflow run',
          );
        const artifact: StoredArtifact = {
          id: nextId++,
          runId: run.runId,
          runBackendId: run.runBackendId,
          jobBackendId: run.jobBackendId,
          name,
          finalized: false,
          size: 0,
          digest: undefined,
          createdAt: new Date(),
          blob: undefined,
          uploadSig: randomBytes(12).toString('base64'),
          downloadSig: randomBytes(12).toString('base64'),
        };
        stored.push(artifact);
        return reply({ ok: true, signed_upload_url: signed(artifact, 'w') });
      }
      case 'FinalizeArtifact': {
        const artifact = stored.find(
          (a) => a.runBackendId === run.runBackendId && a.name === body.name && !a.finalized,
        );
        if (!artifact?.blob) return twirpError(res, 404, 'not_found', 'artifact not found or not uploaded');
        if (Number(body.size) !== artifact.blob.length)
          return twirpError(
            res,
            400,
            'invalid_argument',
            `size ${body.size} does not match ${artifact.blob.length}`,
          );
        const digest = `sha256:${createHash('sha256').update(artifact.blob).digest('hex')}`;
        if (body.hash !== undefined && body.hash !== digest)
          return twirpError(res, 400, 'invalid_argument', 'hash does not match the uploaded blob');
        artifact.finalized = true;
        artifact.size = artifact.blob.length;
        artifact.digest = digest;
        return reply({ ok: true, artifact_id: String(artifact.id) });
      }
      case 'ListArtifacts': {
        let list = inRun;
        if (body.name_filter !== undefined) list = list.filter((a) => a.name === body.name_filter);
        if (body.id_filter !== undefined) list = list.filter((a) => String(a.id) === String(body.id_filter));
        return reply({ artifacts: list.map(monolith) });
      }
      case 'GetSignedArtifactURL': {
        const artifact = inRun.find((a) => a.name === body.name);
        if (!artifact) return twirpError(res, 404, 'not_found', 'artifact not found');
        return reply({ signed_url: signed(artifact, 'r') });
      }
      case 'DeleteArtifact': {
        const index = stored.findIndex((a) => a.runBackendId === run.runBackendId && a.name === body.name);
        if (index < 0) return twirpError(res, 404, 'not_found', 'artifact not found');
        const [artifact] = stored.splice(index, 1);
        return reply({ ok: true, artifact_id: String(artifact?.id) });
      }
      default:
        return twirpError(res, 404, 'bad_route', `no method ${method}`);
    }
  };

  const blob = async (req: IncomingMessage, res: ServerResponse, target: URL) => {
    const artifact = stored.find((a) => blobPath(a) === target.pathname);
    const sig = target.searchParams.get('sig');
    const permission = target.searchParams.get('sp');
    const fail = (status: number, code: string) => {
      res.writeHead(status, { 'content-type': 'application/xml', 'x-ms-error-code': code });
      res.end(
        `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`,
      );
    };
    if (!artifact) return fail(404, 'BlobNotFound');
    const headers = {
      'x-ms-request-id': randomBytes(8).toString('hex'),
      'x-ms-version': '2023-11-03',
      date: new Date().toUTCString(),
    };
    if (req.method === 'GET') {
      if (permission !== 'r' || sig !== artifact.downloadSig) return fail(403, 'AuthenticationFailed');
      if (!artifact.blob) return fail(404, 'BlobNotFound');
      res.writeHead(200, {
        ...headers,
        'content-type': 'application/zip',
        'content-length': String(artifact.blob.length),
      });
      res.end(artifact.blob);
      return;
    }
    if (req.method !== 'PUT') return fail(405, 'UnsupportedHttpVerb');
    if (permission !== 'w' || sig !== artifact.uploadSig) return fail(403, 'AuthenticationFailed');
    const data = await readBody(req);
    const comp = target.searchParams.get('comp');
    if (comp === 'block') {
      const blockId = target.searchParams.get('blockid') ?? '';
      const staged = blocks.get(artifact.id) ?? new Map<string, Buffer>();
      staged.set(blockId, data);
      blocks.set(artifact.id, staged);
      res.writeHead(201, { ...headers, 'x-ms-request-server-encrypted': 'true' });
      res.end();
      return;
    }
    if (comp === 'blocklist') {
      const ids = [...data.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]*)<\//g)].map(
        (m) => m[1] ?? '',
      );
      const staged = blocks.get(artifact.id) ?? new Map<string, Buffer>();
      const parts = ids.map((id) => staged.get(id));
      if (parts.some((p) => p === undefined)) return fail(400, 'InvalidBlockList');
      artifact.blob = Buffer.concat(parts as Buffer[]);
      blocks.delete(artifact.id);
      res.writeHead(201, {
        ...headers,
        etag: `"0x${randomBytes(8).toString('hex')}"`,
        'last-modified': headers.date,
      });
      res.end();
      return;
    }
    if (comp === null && req.headers['x-ms-blob-type'] === 'BlockBlob') {
      artifact.blob = data;
      res.writeHead(201, {
        ...headers,
        etag: `"0x${randomBytes(8).toString('hex')}"`,
        'last-modified': headers.date,
      });
      res.end();
      return;
    }
    return fail(400, 'InvalidQueryParameterValue');
  };

  const server: Server = createServer((req, res) => {
    const target = new URL(req.url ?? '/', 'http://127.0.0.1');
    calls.push({ method: req.method ?? '', path: target.pathname });
    const route = /^\/twirp\/([\w.]+)\/(\w+)$/.exec(target.pathname);
    const handle = route
      ? route[1] === SERVICE && req.method === 'POST'
        ? twirp(req, res, route[2] ?? '')
        : Promise.resolve(twirpError(res, 404, 'bad_route', 'no such service'))
      : blob(req, res, target);
    handle.catch((error: Error) => {
      if (!res.headersSent) twirpError(res, 500, 'internal', error.message);
      else res.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  /** A job's runtime token: an unsigned JWT whose `scp` claim names the run and job (as the real one). */
  const createJob = ({ runId, runBackendId }: Pick<FakeRun, 'runId' | 'runBackendId'>): FakeRun => {
    const jobBackendId = `job-${randomBytes(4).toString('hex')}`;
    const token = `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({
      scp: `Actions.GenericRead:${runBackendId} Actions.Results:${runBackendId}:${jobBackendId}`,
      exp: 4102444800,
    })}.${randomBytes(16).toString('base64url')}`;
    const run = { runId, runBackendId, jobBackendId, token };
    runs.set(token, run);
    return run;
  };

  return {
    url,
    createRun(runId) {
      return createJob({ runId, runBackendId: `run-${runId}-${randomBytes(4).toString('hex')}` });
    },
    createJob: (run) => createJob(run),
    artifacts(filter = {}) {
      return stored.filter(
        (a) =>
          a.finalized &&
          (filter.runId === undefined || a.runId === filter.runId) &&
          (filter.name === undefined || a.name === filter.name),
      );
    },
    signedDownloadUrl: (a) => signed(a, 'r'),
    calls,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The files of a zip archive (what an artifact's blob holds), read through its central directory. */
export function readZip(zip: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error('not a zip archive');
  const entries = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('bad central directory entry');
    const method = zip.readUInt16LE(at + 10);
    const compressed = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    const local = zip.readUInt32LE(at + 42);
    const name = zip.toString('utf8', at + 46, at + 46 + nameLength);
    const dataAt = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const data = zip.subarray(dataAt, dataAt + compressed);
    if (!name.endsWith('/')) files.set(name, method === 8 ? inflateRawSync(data) : Buffer.from(data));
    at += 46 + nameLength + extraLength + commentLength;
  }
  return files;
}
