import { describe, expect, it } from 'vitest';
import type { Finding, FindingCode } from '../../../src/core/preflight';
import {
  checkTimescale,
  checkTimescaleSupported,
  describeJob,
  type HypertableFact,
  isTimescalePreloaded,
  type SourceTimescaleFacts,
  type TargetTimescaleFacts,
} from '../../../src/core/preflight-timescaledb';

const hypertable = (overrides: Partial<HypertableFact> = {}): HypertableFact => ({
  schema: 'public',
  name: 'metrics',
  timeColumn: 'time',
  chunks: 4,
  compressedChunks: 0,
  compressionEnabled: false,
  hasReplicaIdentity: true,
  segmentBy: [],
  orderBy: [],
  ...overrides,
});

const source = (overrides: Partial<SourceTimescaleFacts> = {}): SourceTimescaleFacts => ({
  version: '2.28.3',
  unreadable: null,
  hypertables: [],
  continuousAggregates: [],
  jobs: [],
  managedRelations: [],
  chunkSchemas: ['_timescaledb_internal'],
  compressionMarkers: true,
  tieredChunks: 0,
  ...overrides,
});

const target = (overrides: Partial<TargetTimescaleFacts> = {}): TargetTimescaleFacts => ({
  installedVersion: null,
  defaultVersion: '2.28.3',
  availableVersions: ['2.28.3'],
  preloaded: true,
  ...overrides,
});

const allow = { allowVersionMismatch: false };
const codes = (findings: Finding[]) => findings.map((f) => f.code);
function only(findings: Finding[], code: FindingCode): Finding {
  const matching = findings.filter((f) => f.code === code);
  expect(matching, `exactly one ${code} in ${codes(findings).join(', ')}`).toHaveLength(1);
  return matching[0] as Finding;
}

describe('isTimescalePreloaded', () => {
  it('finds timescaledb in the ways shared_preload_libraries can name it', () => {
    expect(isTimescalePreloaded('timescaledb')).toBe(true);
    expect(isTimescalePreloaded("pg_stat_statements, 'timescaledb'")).toBe(true);
    expect(isTimescalePreloaded('"$libdir/timescaledb",auto_explain')).toBe(true);
    expect(isTimescalePreloaded('$libdir/timescaledb.so')).toBe(true);
    expect(isTimescalePreloaded('')).toBe(false);
    expect(isTimescalePreloaded('pg_stat_statements, timescaledb_toolkit')).toBe(false);
  });
});

describe('checkTimescaleSupported (the blocking findings)', () => {
  it('says nothing about a source without TimescaleDB, or with it installed but no hypertable', () => {
    expect(checkTimescaleSupported(null, false)).toEqual([]);
    expect(checkTimescaleSupported(source(), false)).toEqual([]);
  });

  it('lets hypertables through for a superuser with compression markers on', () => {
    const facts = source({
      hypertables: [
        hypertable({ compressionEnabled: true, compressedChunks: 2 }),
        hypertable({ name: 'events' }),
      ],
    });
    expect(checkTimescaleSupported(facts, true)).toEqual([]);
  });

  it('warns about hypertables without a superuser: new chunks are copied again at cutover', () => {
    const [finding, ...rest] = checkTimescaleSupported(
      source({ hypertables: [hypertable(), hypertable({ name: 'events', chunks: 3 })] }),
      false,
    );
    expect(rest).toEqual([]);
    expect(finding).toMatchObject({ code: 'TIMESCALEDB_NOT_SUPERUSER', severity: 'warning' });
    expect(finding?.objects).toEqual(['public.metrics', 'public.events']);
    expect(finding?.message).toContain('FOR TABLES IN SCHEMA _timescaledb_internal');
  });

  it('refuses compression without TimescaleDB compression markers, naming the setting', () => {
    const compressed = [hypertable({ compressionEnabled: true, compressedChunks: 1 })];
    for (const markers of [false, null]) {
      const [finding, ...rest] = checkTimescaleSupported(
        source({ hypertables: compressed, compressionMarkers: markers }),
        true,
      );
      expect(rest).toEqual([]);
      expect(finding).toMatchObject({ code: 'TIMESCALEDB_COMPRESSION_MARKERS_OFF', severity: 'error' });
      expect(finding?.fix).toContain('timescaledb.enable_compression_wal_markers = on');
    }
    // Without compression the markers do not matter.
    expect(
      checkTimescaleSupported(source({ hypertables: [hypertable()], compressionMarkers: false }), true),
    ).toEqual([]);
  });

  it('refuses chunks tiered to object storage, whose rows neither the copy nor the replay can reach', () => {
    const [finding, ...rest] = checkTimescaleSupported(
      source({ hypertables: [hypertable()], tieredChunks: 3 }),
      true,
    );
    expect(rest).toEqual([]);
    expect(finding).toMatchObject({ code: 'TIMESCALEDB_TIERED_DATA', severity: 'error' });
    expect(finding?.message).toContain('3 chunks of the hypertables to migrate are tiered to object storage');
    expect(finding?.fix).toContain('untier_chunk');
  });

  it('refuses a source whose TimescaleDB catalog could not be read, with the reason', () => {
    const [finding] = checkTimescaleSupported(
      source({ unreadable: 'permission denied for view hypertables' }),
      true,
    );
    expect(finding).toMatchObject({ code: 'TIMESCALEDB_NOT_SUPPORTED_YET', severity: 'error' });
    expect(finding?.message).toContain('could not be read: permission denied for view hypertables');
  });
});

describe('TimescaleDB on both sides', () => {
  it('records equal versions and nothing else', () => {
    const findings = checkTimescale(source(), target({ installedVersion: '2.28.3' }), allow);
    expect(codes(findings)).toEqual(['TIMESCALEDB_VERSIONS']);
    expect(findings[0]?.message).toBe(
      'TimescaleDB 2.28.3 on the source; on the target: 2.28.3 installed in the target database, in shared_preload_libraries.',
    );
  });

  it('says nothing when neither side has TimescaleDB', () => {
    expect(checkTimescale(null, target({ defaultVersion: null, availableVersions: [] }), allow)).toEqual([]);
  });

  it('refuses a target server without TimescaleDB', () => {
    const findings = checkTimescale(
      source(),
      target({ defaultVersion: null, availableVersions: [], preloaded: false }),
      allow,
    );
    expect(codes(findings)).toEqual(['TIMESCALEDB_VERSIONS', 'TIMESCALEDB_MISSING_ON_TARGET']);
    const missing = only(findings, 'TIMESCALEDB_MISSING_ON_TARGET');
    expect(missing.severity).toBe('error');
    expect(missing.fix).toContain('Install TimescaleDB 2.28.3');
  });

  it('refuses a target that has TimescaleDB but does not preload it', () => {
    const findings = checkTimescale(source(), target({ preloaded: false }), allow);
    expect(only(findings, 'TIMESCALEDB_NOT_PRELOADED_ON_TARGET')).toMatchObject({
      severity: 'error',
      fix: expect.stringContaining("ALTER SYSTEM SET shared_preload_libraries = 'timescaledb';"),
    });
    expect(only(findings, 'TIMESCALEDB_VERSIONS').message).toContain('not in shared_preload_libraries');
  });

  it("refuses a version difference, with CREATE EXTENSION … VERSION when the target can install the source's", () => {
    const findings = checkTimescale(
      source({ version: '2.27.1' }),
      target({ availableVersions: ['2.27.1', '2.28.3'] }),
      allow,
    );
    const mismatch = only(findings, 'TIMESCALEDB_VERSION_MISMATCH');
    expect(mismatch.severity).toBe('error');
    expect(mismatch.message).toContain(
      'TimescaleDB 2.27.1 on the source, 2.28.3 on the target (the version the schema restore would install)',
    );
    expect(mismatch.fix).toContain("CREATE EXTENSION timescaledb VERSION '2.27.1';");
    expect(mismatch.fix).toContain('--allow-timescaledb-version-mismatch');
  });

  it('compares with the installed version, and says to reinstall it where the source version is available', () => {
    const mismatch = only(
      checkTimescale(
        source({ version: '2.27.1' }),
        target({ installedVersion: '2.28.3', availableVersions: ['2.27.1', '2.28.3'] }),
        allow,
      ),
      'TIMESCALEDB_VERSION_MISMATCH',
    );
    expect(mismatch.message).toContain('2.28.3 on the target (installed)');
    expect(mismatch.fix).toContain(
      "DROP EXTENSION timescaledb; CREATE EXTENSION timescaledb VERSION '2.27.1';",
    );
  });

  it("says to install the source's version or update the source when the target cannot install it", () => {
    const mismatch = only(
      checkTimescale(source({ version: '2.27.1' }), target(), allow),
      'TIMESCALEDB_VERSION_MISMATCH',
    );
    expect(mismatch.fix).toContain('Install TimescaleDB 2.27.1 on the target server');
    expect(mismatch.fix).toContain("ALTER EXTENSION timescaledb UPDATE TO '2.28.3';");
  });

  it('turns the version difference into a warning with --allow-timescaledb-version-mismatch', () => {
    const mismatch = only(
      checkTimescale(source({ version: '2.27.1' }), target(), { allowVersionMismatch: true }),
      'TIMESCALEDB_VERSION_MISMATCH',
    );
    expect(mismatch.severity).toBe('warning');
    expect(mismatch.message).toContain('accepted with --allow-timescaledb-version-mismatch');
  });

  it('notes TimescaleDB installed only on the target, and leaves a merely available one alone', () => {
    const [note, ...rest] = checkTimescale(null, target({ installedVersion: '2.28.3' }), allow);
    expect(rest).toEqual([]);
    expect(note).toMatchObject({ code: 'TIMESCALEDB_ONLY_ON_TARGET', severity: 'info' });
    expect(note?.fix).toContain('create_hypertable');
    expect(checkTimescale(null, target(), allow)).toEqual([]);
  });

  it('checks the source features even when the target could not be read', () => {
    const findings = checkTimescale(
      source({ hypertables: [hypertable({ hasReplicaIdentity: false })] }),
      undefined,
      allow,
    );
    expect(codes(findings)).toEqual(['TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY']);
  });
});

describe('what the source uses', () => {
  it('lists keyless hypertables with REPLICA IDENTITY FULL for each', () => {
    const finding = only(
      checkTimescale(
        source({
          hypertables: [hypertable(), hypertable({ name: 'events', hasReplicaIdentity: false })],
        }),
        target(),
        allow,
      ),
      'TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY',
    );
    expect(finding.severity).toBe('warning');
    expect(finding.objects).toEqual(['public.events']);
    expect(finding.fix).toContain('ALTER TABLE "public"."events" REPLICA IDENTITY FULL;');
    expect(finding.fix).toContain('must include the time column');
  });

  it('describes compression per hypertable: compressed chunks and settings, also after it was disabled', () => {
    const finding = only(
      checkTimescale(
        source({
          hypertables: [
            hypertable({
              compressionEnabled: true,
              compressedChunks: 1,
              segmentBy: ['device'],
              orderBy: ['time DESC'],
            }),
            hypertable({ name: 'old', chunks: 2, compressedChunks: 2 }),
            hypertable({ name: 'raw' }),
          ],
        }),
        target(),
        allow,
      ),
      'TIMESCALEDB_COMPRESSION',
    );
    expect(finding.severity).toBe('warning');
    expect(finding.objects).toEqual(['public.metrics', 'public.old']);
    expect(finding.message).toContain(
      'Compression is in use on 2 hypertables: public.metrics (1 of 4 chunks compressed; segmentby device; orderby time DESC), public.old (2 of 2 chunks compressed, compression since disabled).',
    );
    expect(finding.message).toContain('compressed again there');
  });

  it('lists continuous aggregates with their hypertable and whether they are real-time', () => {
    const finding = only(
      checkTimescale(
        source({
          continuousAggregates: [
            {
              schema: 'public',
              name: 'hourly',
              hypertable: { schema: 'public', name: 'metrics' },
              materializedOnly: false,
              compressionEnabled: true,
            },
          ],
        }),
        target(),
        allow,
      ),
      'TIMESCALEDB_CONTINUOUS_AGGREGATES',
    );
    expect(finding.message).toContain('public.hourly on public.metrics (real-time) (compressed)');
    expect(finding.message).toContain('with their materialized rows copied, and refreshed at cutover');
  });

  it('names each job by its policy or procedure; a warning while any is scheduled, information when all are paused', () => {
    const retention = {
      id: 1001,
      proc: { schema: '_timescaledb_functions', name: 'policy_retention' },
      relation: { schema: 'public', name: 'events' },
      scheduled: true,
      schedule: '1 day',
    };
    const user = {
      id: 1002,
      proc: { schema: 'public', name: 'rollup' },
      relation: null,
      scheduled: false,
      schedule: '01:00:00',
    };
    expect(describeJob(retention)).toBe(
      'retention policy on public.events (job 1001, schedule_interval 1 day)',
    );
    expect(describeJob(user)).toBe('user job public.rollup (job 1002, schedule_interval 01:00:00, paused)');
    const scheduled = only(
      checkTimescale(source({ jobs: [retention, user] }), target(), allow),
      'TIMESCALEDB_JOBS',
    );
    expect(scheduled).toMatchObject({ severity: 'warning', objects: ['1001', '1002'] });
    expect(scheduled.message).toContain('2 background jobs (1 scheduled)');
    expect(only(checkTimescale(source({ jobs: [user] }), target(), allow), 'TIMESCALEDB_JOBS').severity).toBe(
      'info',
    );
  });

  it('reports no source features when the catalog could not be read (the blocking finding says why)', () => {
    const findings = checkTimescale(source({ unreadable: 'boom' }), target(), allow);
    expect(codes(findings)).toEqual(['TIMESCALEDB_VERSIONS']);
  });
});
