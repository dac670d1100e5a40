import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/core/errors';
import {
  buildPreflightReport,
  computeFindings,
  computeSnapshotReadiness,
  errorCodeForFinding,
  FINDING_CODES,
  type Finding,
  type FindingCode,
  type PreflightFacts,
  type SourceFacts,
  type SourceTableFact,
  type TargetFacts,
  type ToolFact,
} from '../../src/core/preflight';
import { renderPreflightMarkdown, renderPreflightText } from '../../src/workflows/preflight-render';

const GB = 1024 ** 3;
const MB = 1024 ** 2;

const table = (overrides: Partial<SourceTableFact> = {}): SourceTableFact => ({
  schema: 'public',
  name: 't',
  kind: 'table',
  unlogged: false,
  isPartition: false,
  columns: ['id'],
  allColumns: ['id'],
  primaryKey: ['id'],
  replicaIdentity: 'default',
  hasReplicaIdentity: true,
  integerKey: 'id',
  bytes: 8192,
  pages: 1,
  owner: 'app',
  owned: true,
  canSelect: true,
  ...overrides,
});

const server = {
  display: 'postgresql://app:********@db:5432/shop',
  database: 'shop',
  user: 'app',
  versionNum: 160002,
  version: '16.2',
  encoding: 'UTF8',
  collate: 'en_US.UTF-8',
  ctype: 'en_US.UTF-8',
  localeProvider: 'c',
  icuLocale: null,
  skipped: [],
};

const sourceFacts = (overrides: Partial<SourceFacts> = {}): SourceFacts => ({
  ...server,
  inRecovery: false,
  walLevel: 'logical',
  maxReplicationSlots: 10,
  usedReplicationSlots: 2,
  maxWalSenders: 10,
  usedWalSenders: 1,
  isSuperuser: false,
  hasReplicationAttribute: true,
  rdsReplicationMember: null,
  canCreateInDatabase: true,
  schemas: [{ name: 'public', usage: true }],
  tables: [table({ name: 'orders' }), table({ name: 'customers' })],
  sequencesWithoutSelect: [],
  extensions: [{ name: 'plpgsql', version: '1.0' }],
  largeObjects: 0,
  tablespaces: [],
  maxSlotWalKeepSizeMb: 100 * 1024,
  walSample: { bytes: 1 * MB, seconds: 1 },
  walStats: null,
  names: {
    slot: 'pg_live_migrate_default',
    publication: 'pg_live_migrate_default',
    insertOnlyPublication: 'pg_live_migrate_default_insert_only',
  },
  slot: null,
  publications: [],
  timescaledb: null,
  ...overrides,
});

const targetFacts = (overrides: Partial<TargetFacts> = {}): TargetFacts => ({
  ...server,
  display: 'postgresql://admin:********@new-db:5432/shop',
  user: 'admin',
  userTables: [],
  userTableCount: 0,
  migration: null,
  availableExtensions: ['plpgsql', 'pgcrypto'],
  tablespaces: ['pg_default', 'pg_global'],
  timescaledb: { installedVersion: null, defaultVersion: null, availableVersions: [], preloaded: false },
  ...overrides,
});

const tools = (major = 16): ToolFact[] =>
  (['pg_dump', 'pg_restore', 'pg_dumpall'] as const).map((tool) => ({
    tool,
    path: `/usr/lib/postgresql/${major}/bin/${tool}`,
    found: true,
    major,
    error: null,
  }));

function facts(
  o: {
    source?: Partial<SourceFacts>;
    target?: Partial<TargetFacts>;
    tools?: ToolFact[];
    schemas?: string[] | null;
  } = {},
): PreflightFacts {
  return {
    migrationId: 'default',
    schemas: o.schemas ?? null,
    source: { ok: true, facts: sourceFacts(o.source) },
    target: { ok: true, facts: targetFacts(o.target) },
    tools: o.tools ?? tools(),
  };
}

const codes = (findings: Finding[]) => findings.map((f) => f.code);
function only(findings: Finding[], code: FindingCode): Finding {
  const matching = findings.filter((f) => f.code === code);
  expect(matching, `exactly one ${code} in ${codes(findings).join(', ')}`).toHaveLength(1);
  return matching[0] as Finding;
}

describe('computeFindings on a healthy migration', () => {
  it('reports only information, so the report passes', () => {
    const findings = computeFindings(facts());
    expect(findings.filter((f) => f.severity !== 'info')).toEqual([]);
    expect(codes(findings).sort()).toEqual(['SERVER_VERSIONS', 'SOURCE_WAL_RETENTION_ESTIMATE']);
    expect(buildPreflightReport('default', findings)).toMatchObject({ ok: true, counts: { error: 0 } });
  });

  it('records both server versions and the client tools in one finding', () => {
    const versions = only(computeFindings(facts()), 'SERVER_VERSIONS');
    expect(versions.message).toContain('source PostgreSQL 16.2');
    expect(versions.message).toContain('target PostgreSQL 16.2');
    expect(versions.message).toContain('pg_dump 16 (/usr/lib/postgresql/16/bin/pg_dump)');
  });
});

describe('connectivity', () => {
  it('turns each kind of connection failure into its own error code and skips that side', () => {
    const kinds = ['unreachable', 'auth', 'database', 'other'] as const;
    const expected = [
      'SOURCE_UNREACHABLE',
      'SOURCE_AUTH_FAILED',
      'SOURCE_DATABASE_NOT_FOUND',
      'SOURCE_CONNECTION_FAILED',
    ];
    kinds.forEach((kind, i) => {
      const f = facts();
      f.source = { ok: false, failure: { kind, message: `observed ${kind}`, hint: `do ${kind}` } };
      const findings = computeFindings(f);
      const failure = only(findings, expected[i] as FindingCode);
      expect(failure).toMatchObject({ severity: 'error', message: `observed ${kind}`, fix: `do ${kind}` });
      expect(codes(findings)).not.toContain('SOURCE_WAL_RETENTION_ESTIMATE');
    });
  });

  it('reports an unreachable target and still checks the source', () => {
    const f = facts({ source: { walLevel: 'replica' } });
    f.target = { ok: false, failure: { kind: 'unreachable', message: 'refused', hint: 'open the port' } };
    expect(codes(computeFindings(f))).toEqual(
      expect.arrayContaining(['TARGET_UNREACHABLE', 'SOURCE_WAL_LEVEL_NOT_LOGICAL']),
    );
  });

  it('does not judge tool versions against a source it could not reach', () => {
    const f = facts({ tools: tools(9) });
    f.source = { ok: false, failure: { kind: 'auth', message: 'refused', hint: 'password' } };
    expect(codes(computeFindings(f))).not.toContain('PG_TOOL_TOO_OLD');
  });
});

describe('server versions', () => {
  it('refuses a source older than PostgreSQL 10 and checks nothing else on it', () => {
    const findings = computeFindings(
      facts({ source: { versionNum: 90624, version: '9.6.24', walLevel: 'minimal' } }),
    );
    expect(only(findings, 'SOURCE_VERSION_UNSUPPORTED').message).toContain('9.6.24');
    expect(codes(findings)).not.toContain('SOURCE_WAL_LEVEL_NOT_LOGICAL');
  });

  it('warns when the target major version is older than the source', () => {
    const older = only(
      computeFindings(facts({ target: { versionNum: 150004, version: '15.4' } })),
      'TARGET_VERSION_OLDER',
    );
    expect(older.severity).toBe('warning');
    expect(older.message).toContain('15.4');
    const newer = computeFindings(facts({ target: { versionNum: 170000, version: '17.0' } }));
    expect(codes(newer)).not.toContain('TARGET_VERSION_OLDER');
  });

  it('refuses a standby before PostgreSQL 16 and warns from 16 on', () => {
    const old = only(
      computeFindings(facts({ source: { inRecovery: true, versionNum: 150004, version: '15.4' } })),
      'SOURCE_IS_STANDBY',
    );
    expect(old.severity).toBe('error');
    expect(only(computeFindings(facts({ source: { inRecovery: true } })), 'SOURCE_IS_STANDBY').severity).toBe(
      'warning',
    );
    expect(codes(computeFindings(facts()))).not.toContain('SOURCE_IS_STANDBY');
  });
});

describe('replication settings', () => {
  it('reports a wal_level other than logical with the observed value and the exact fix', () => {
    const finding = only(
      computeFindings(facts({ source: { walLevel: 'replica' } })),
      'SOURCE_WAL_LEVEL_NOT_LOGICAL',
    );
    expect(finding.severity).toBe('error');
    expect(finding.message).toContain("'replica'");
    expect(finding.fix).toContain('ALTER SYSTEM SET wal_level = logical;');
  });

  it('needs one free replication slot, unless the migration slot already exists', () => {
    const full = { maxReplicationSlots: 4, usedReplicationSlots: 4 };
    const finding = only(computeFindings(facts({ source: full })), 'SOURCE_NO_FREE_REPLICATION_SLOT');
    expect(finding.message).toContain('max_replication_slots = 4 and 4 slots exist');
    expect(finding.fix).toContain('ALTER SYSTEM SET max_replication_slots = 5;');
    const resuming = facts({
      source: { ...full, slot: { activePid: null } },
      target: { migration: { phase: 'copy' } },
    });
    expect(codes(computeFindings(resuming))).not.toContain('SOURCE_NO_FREE_REPLICATION_SLOT');
    expect(
      codes(computeFindings(facts({ source: { usedReplicationSlots: 3, maxReplicationSlots: 4 } }))),
    ).not.toContain('SOURCE_NO_FREE_REPLICATION_SLOT');
  });

  it('needs one free WAL sender for the snapshot-holding connection, unless ours already streams', () => {
    const busy = { maxWalSenders: 2, usedWalSenders: 2 };
    const finding = only(computeFindings(facts({ source: busy })), 'SOURCE_NO_FREE_WAL_SENDER');
    expect(finding.message).toContain('max_wal_senders = 2 and 2 WAL senders');
    expect(finding.fix).toContain('ALTER SYSTEM SET max_wal_senders = 3;');
    const ours = facts({
      source: { ...busy, slot: { activePid: 4242 } },
      target: { migration: { phase: 'copy' } },
    });
    expect(codes(computeFindings(ours))).not.toContain('SOURCE_NO_FREE_WAL_SENDER');
  });
});

describe('privileges', () => {
  it('needs superuser, REPLICATION or rds_replication to create the slot', () => {
    const plain = only(
      computeFindings(facts({ source: { hasReplicationAttribute: false } })),
      'SOURCE_CANNOT_REPLICATE',
    );
    expect(plain.fix).toBe('ALTER ROLE "app" WITH REPLICATION;');
    const rds = only(
      computeFindings(facts({ source: { hasReplicationAttribute: false, rdsReplicationMember: false } })),
      'SOURCE_CANNOT_REPLICATE',
    );
    expect(rds.fix).toBe('GRANT rds_replication TO "app";');
    for (const ok of [
      { hasReplicationAttribute: false, rdsReplicationMember: true },
      { hasReplicationAttribute: false, isSuperuser: true },
      { hasReplicationAttribute: true },
    ]) {
      expect(codes(computeFindings(facts({ source: ok })))).not.toContain('SOURCE_CANNOT_REPLICATE');
    }
  });

  it('needs CREATE on the database for the publication (superusers have it)', () => {
    const finding = only(
      computeFindings(facts({ source: { canCreateInDatabase: false } })),
      'SOURCE_CANNOT_CREATE_PUBLICATION',
    );
    expect(finding.fix).toBe('GRANT CREATE ON DATABASE "shop" TO "app";');
    expect(
      codes(computeFindings(facts({ source: { canCreateInDatabase: false, isSuperuser: true } }))),
    ).not.toContain('SOURCE_CANNOT_CREATE_PUBLICATION');
  });

  it('lists replicated tables the user does not own, with a grant of each owning role', () => {
    const tables = [
      table({ name: 'orders', owned: false, owner: 'shop_owner' }),
      table({ name: 'customers' }),
      table({ name: 'scratch', unlogged: true, owned: false, owner: 'etl' }),
    ];
    const finding = only(computeFindings(facts({ source: { tables } })), 'SOURCE_TABLES_NOT_OWNED');
    expect(finding.objects).toEqual(['public.orders']);
    expect(finding.message).toContain('does not own 1 of the 2 tables to replicate: public.orders');
    expect(finding.fix).toContain('GRANT "shop_owner" TO "app";');
    expect(finding.fix).not.toContain('etl');
    expect(codes(computeFindings(facts({ source: { tables, isSuperuser: true } })))).not.toContain(
      'SOURCE_TABLES_NOT_OWNED',
    );
  });

  it('names every table and sequence without SELECT, with per-object grants', () => {
    const finding = only(
      computeFindings(
        facts({
          source: {
            tables: [table({ name: 'orders', canSelect: false }), table({ name: 'customers' })],
            sequencesWithoutSelect: [{ schema: 'public', name: 'orders_id_seq' }],
          },
        }),
      ),
      'SOURCE_SELECT_DENIED',
    );
    expect(finding.message).toContain('lacks SELECT on 1 table and 1 sequence to copy: public.orders');
    expect(finding.objects).toEqual(['public.orders', 'public.orders_id_seq']);
    expect(finding.fix).toBe(
      'GRANT SELECT ON "public"."orders" TO "app";\nGRANT SELECT ON "public"."orders_id_seq" TO "app";',
    );
  });

  it('switches to schema-wide grants when many objects lack SELECT', () => {
    const tables = Array.from({ length: 12 }, (_, i) => table({ name: `t${i}`, canSelect: false }));
    const finding = only(computeFindings(facts({ source: { tables } })), 'SOURCE_SELECT_DENIED');
    expect(finding.fix).toContain('GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "app";');
    expect(finding.message).toContain('… and 2 more');
    expect(finding.objects).toHaveLength(12);
  });

  it('does not require SELECT on foreign tables, which are not copied', () => {
    const tables = [table({ name: 'remote', kind: 'foreign', canSelect: false })];
    expect(codes(computeFindings(facts({ source: { tables } })))).not.toContain('SOURCE_SELECT_DENIED');
  });

  it('reports schemas without USAGE and --schema values that do not exist', () => {
    const findings = computeFindings(
      facts({
        schemas: ['public', 'Sales', 'missing'],
        source: {
          schemas: [
            { name: 'public', usage: true },
            { name: 'Sales', usage: false },
          ],
        },
      }),
    );
    expect(only(findings, 'SOURCE_SCHEMA_USAGE_DENIED').fix).toBe('GRANT USAGE ON SCHEMA "Sales" TO "app";');
    expect(only(findings, 'SOURCE_SCHEMA_NOT_FOUND').objects).toEqual(['missing']);
  });

  it('warns when there is nothing to copy', () => {
    expect(only(computeFindings(facts({ source: { tables: [] } })), 'NOTHING_TO_COPY').severity).toBe(
      'warning',
    );
  });
});

describe('client tools', () => {
  it('reports a missing pg_dump with the package and --pg-bindir to use', () => {
    const list = tools();
    list[0] = { ...(list[0] as ToolFact), found: false, major: null, path: 'pg_dump on PATH' };
    const finding = only(computeFindings(facts({ tools: list })), 'PG_TOOL_NOT_FOUND');
    expect(finding.severity).toBe('error');
    expect(finding.fix).toContain('postgresql-client-16');
    expect(finding.fix).toContain('--pg-bindir /usr/lib/postgresql/16/bin');
  });

  it('reports pg_dump and pg_restore older than the source as errors and pg_dumpall as a warning', () => {
    const findings = computeFindings(facts({ tools: tools(9) })).filter((f) => f.code === 'PG_TOOL_TOO_OLD');
    expect(findings.map((f) => [f.objects?.[0], f.severity])).toEqual([
      ['pg_dump', 'error'],
      ['pg_restore', 'error'],
      ['pg_dumpall', 'warning'],
    ]);
    expect(findings[0]?.message).toContain('major version 9, older than the source (PostgreSQL 16.2)');
    expect(codes(computeFindings(facts({ tools: tools(17) })))).not.toContain('PG_TOOL_TOO_OLD');
  });

  it('reports a pg_restore older than the pg_dump it must read', () => {
    const list = tools(17);
    list[1] = { ...(list[1] as ToolFact), major: 16 };
    const finding = only(computeFindings(facts({ tools: list })), 'PG_TOOL_TOO_OLD');
    expect(finding.message).toContain('older than pg_dump');
  });

  it('reports a tool whose version cannot be read', () => {
    const list = tools();
    list[0] = { ...(list[0] as ToolFact), major: null, error: 'garbled' };
    expect(only(computeFindings(facts({ tools: list })), 'PG_TOOL_VERSION_UNKNOWN').message).toContain(
      'garbled',
    );
  });
});

describe('target state and leftovers of this migration id', () => {
  it('refuses a target that already has user tables, naming them', () => {
    const finding = only(
      computeFindings(
        facts({ target: { userTables: [{ schema: 'public', name: 'orders' }], userTableCount: 3 } }),
      ),
      'TARGET_NOT_EMPTY',
    );
    expect(finding.message).toContain('3 user tables');
    expect(finding.message).toContain('public.orders … and 2 more');
  });

  it('treats a target that records this migration as a resume, not a conflict', () => {
    const findings = computeFindings(
      facts({
        source: { slot: { activePid: null }, publications: ['pg_live_migrate_default'] },
        target: {
          migration: { phase: 'copy' },
          userTables: [{ schema: 'public', name: 'orders' }],
          userTableCount: 1,
        },
      }),
    );
    const resume = only(findings, 'MIGRATION_RESUMABLE');
    expect(resume.severity).toBe('info');
    expect(resume.message).toContain("has slot 'pg_live_migrate_default'");
    expect(codes(findings).filter((c) => c.endsWith('_CONFLICT') || c === 'TARGET_NOT_EMPTY')).toEqual([]);
    expect(findings.filter((f) => f.severity === 'error')).toEqual([]);
  });

  it('refuses an existing slot or publication the target does not record, with the clean command', () => {
    const findings = computeFindings(
      facts({ source: { slot: { activePid: null }, publications: ['pg_live_migrate_default'] } }),
    );
    const slot = only(findings, 'SOURCE_SLOT_CONFLICT');
    expect(slot.severity).toBe('error');
    expect(slot.message).toContain("'pg_live_migrate_default' already exists");
    expect(slot.fix).toContain('pg-live-migrate clean --migration-id default');
    expect(only(findings, 'SOURCE_PUBLICATION_CONFLICT').fix).toContain(
      'DROP PUBLICATION "pg_live_migrate_default";',
    );
  });

  it('only warns about an existing slot when the target could not be read', () => {
    const f = facts({ source: { slot: { activePid: null } } });
    f.target = { ok: false, failure: { kind: 'unreachable', message: 'refused', hint: 'open it' } };
    expect(only(computeFindings(f), 'SOURCE_SLOT_CONFLICT').severity).toBe('warning');
  });

  it('refuses source extensions the target cannot install', () => {
    const finding = only(
      computeFindings(
        facts({
          source: {
            extensions: [
              { name: 'plpgsql', version: '1.0' },
              { name: 'postgis', version: '3.4.2' },
            ],
          },
        }),
      ),
      'TARGET_EXTENSION_UNAVAILABLE',
    );
    expect(finding.message).toContain('postgis 3.4.2');
    expect(finding.objects).toEqual(['postgis']);
  });
});

describe('what is copied and replicated', () => {
  it('warns about tables without a key or replica identity, naming the insert-only publication', () => {
    const tables = [
      table({ name: 'events', primaryKey: null, hasReplicaIdentity: false }),
      table({ name: 'logs', primaryKey: null, replicaIdentity: 'full', hasReplicaIdentity: true }),
    ];
    const finding = only(computeFindings(facts({ source: { tables } })), 'TABLES_WITHOUT_REPLICA_IDENTITY');
    expect(finding.severity).toBe('warning');
    expect(finding.objects).toEqual(['public.events']);
    expect(finding.message).toContain('pg_live_migrate_default_insert_only');
    expect(finding.fix).toContain('ALTER TABLE "public"."events" REPLICA IDENTITY FULL;');
  });

  it('warns about unlogged tables, foreign tables and large objects', () => {
    const findings = computeFindings(
      facts({
        source: {
          tables: [
            table(),
            table({ name: 'cache', unlogged: true }),
            table({ name: 'remote', kind: 'foreign' }),
          ],
          largeObjects: 3,
        },
      }),
    );
    expect(only(findings, 'UNLOGGED_TABLES').fix).toContain('ALTER TABLE "public"."cache" SET LOGGED;');
    expect(only(findings, 'FOREIGN_TABLES').objects).toEqual(['public.remote']);
    expect(only(findings, 'LARGE_OBJECTS').message).toContain('3 large objects');
    const healthy = codes(computeFindings(facts()));
    for (const code of ['UNLOGGED_TABLES', 'FOREIGN_TABLES', 'LARGE_OBJECTS'] as const) {
      expect(healthy).not.toContain(code);
    }
  });

  it('refuses a tablespace the target lacks and notes one it has', () => {
    const findings = computeFindings(
      facts({
        source: {
          tablespaces: [
            { name: 'fast', relations: [{ schema: 'public', name: 'orders' }] },
            { name: 'archive', relations: [{ schema: 'public', name: 'old_orders' }] },
          ],
        },
        target: { tablespaces: ['pg_default', 'pg_global', 'fast'] },
      }),
    );
    const missing = only(findings, 'TABLESPACE_MISSING_ON_TARGET');
    expect(missing.severity).toBe('error');
    expect(missing.fix).toContain('CREATE TABLESPACE "archive"');
    expect(only(findings, 'TABLESPACES_KEPT').objects).toEqual(['public.orders']);
  });
});

describe('WAL retained by the slot', () => {
  // 100 GB at the assumed 100 MB/s is 1024 s; at 1 MB/s of WAL the slot retains 1 GB.
  const big = { tables: [table({ bytes: 100 * GB })], walSample: { bytes: 2 * MB, seconds: 2 } };

  it('warns that an unlimited max_slot_wal_keep_size can fill the disk, with the estimate and its assumption', () => {
    const finding = only(
      computeFindings(facts({ source: { ...big, maxSlotWalKeepSizeMb: -1 } })),
      'SOURCE_WAL_KEEP_UNLIMITED',
    );
    expect(finding.severity).toBe('warning');
    expect(finding.message).toContain('max_slot_wal_keep_size = -1');
    expect(finding.message).toContain('assumed 100.0 MB/s');
    expect(finding.message).toContain('~1.0 GB of WAL');
    expect(finding.fix).toContain("ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'");
  });

  it('warns the same way on servers without the setting', () => {
    const finding = only(
      computeFindings(
        facts({ source: { ...big, maxSlotWalKeepSizeMb: null, versionNum: 120010, version: '12.10' } }),
      ),
      'SOURCE_WAL_KEEP_UNLIMITED',
    );
    expect(finding.message).toContain('PostgreSQL 12.10 has no max_slot_wal_keep_size');
  });

  it('refuses a cap below the estimate and warns about one below twice the estimate', () => {
    const below = only(
      computeFindings(facts({ source: { ...big, maxSlotWalKeepSizeMb: 512 } })),
      'SOURCE_WAL_KEEP_TOO_SMALL',
    );
    expect(below.severity).toBe('error');
    expect(below.message).toContain('max_slot_wal_keep_size = 512MB is below');
    const tight = only(
      computeFindings(facts({ source: { ...big, maxSlotWalKeepSizeMb: 1536 } })),
      'SOURCE_WAL_KEEP_TOO_SMALL',
    );
    expect(tight.severity).toBe('warning');
    const roomy = only(
      computeFindings(facts({ source: { ...big, maxSlotWalKeepSizeMb: 4096 } })),
      'SOURCE_WAL_RETENTION_ESTIMATE',
    );
    expect(roomy.severity).toBe('info');
  });

  it('takes the higher of the sampled and the pg_stat_wal rate', () => {
    const finding = only(
      computeFindings(
        facts({
          source: { ...big, maxSlotWalKeepSizeMb: 1536, walStats: { bytes: 3600 * 4 * MB, seconds: 3600 } },
        }),
      ),
      'SOURCE_WAL_KEEP_TOO_SMALL',
    );
    expect(finding.severity).toBe('error');
    expect(finding.message).toContain('~4.0 MB/s of WAL');
  });
});

describe('WAL rate sources', () => {
  it('ignores a pg_stat_wal window shorter than a minute (a fresh reset)', () => {
    const finding = only(
      computeFindings(
        facts({
          source: {
            tables: [table({ bytes: 100 * GB })],
            walSample: { bytes: 1 * MB, seconds: 1 },
            walStats: { bytes: 500 * MB, seconds: 5 },
          },
        }),
      ),
      'SOURCE_WAL_RETENTION_ESTIMATE',
    );
    expect(finding.message).toContain('~1.0 MB/s of WAL');
    expect(finding.message).not.toContain('pg_stat_wal');
  });
});

describe('encoding and collation', () => {
  it('warns when the source converts into a UTF8 target, refuses other encoding changes', () => {
    const intoUtf8 = only(computeFindings(facts({ source: { encoding: 'LATIN1' } })), 'ENCODING_MISMATCH');
    expect(intoUtf8.severity).toBe('warning');
    const outOfUtf8 = only(computeFindings(facts({ target: { encoding: 'LATIN1' } })), 'ENCODING_MISMATCH');
    expect(outOfUtf8.severity).toBe('error');
    expect(outOfUtf8.fix).toContain(`ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8'`);
    const sqlAscii = only(computeFindings(facts({ source: { encoding: 'SQL_ASCII' } })), 'ENCODING_MISMATCH');
    expect(sqlAscii.severity).toBe('error');
  });

  it('warns when collations differ', () => {
    const finding = only(
      computeFindings(facts({ target: { collate: 'C', ctype: 'C' } })),
      'COLLATION_MISMATCH',
    );
    expect(finding.message).toContain('LC_COLLATE en_US.UTF-8');
    expect(finding.message).toContain('LC_COLLATE C');
  });
});

describe('checks that could not run', () => {
  it('become warnings that name the check and the reason', () => {
    const finding = only(
      computeFindings(
        facts({
          source: { skipped: [{ check: 'large-objects', message: 'permission denied for table x' }] },
        }),
      ),
      'PREFLIGHT_CHECK_SKIPPED',
    );
    expect(finding).toMatchObject({ severity: 'warning', objects: ['large-objects'] });
    expect(finding.message).toContain('permission denied for table x');
  });
});

describe('the report', () => {
  it('puts errors first, counts each severity and fails on any error', () => {
    const report = buildPreflightReport(
      'm1',
      computeFindings(facts({ source: { walLevel: 'replica', largeObjects: 1 } })),
    );
    expect(report.ok).toBe(false);
    expect(report.findings.map((f) => f.severity)).toEqual(['error', 'warning', 'info', 'info']);
    expect(report.counts).toEqual({ error: 1, warning: 1, info: 2 });
  });

  it('documents every code with one line in SCREAMING_SNAKE', () => {
    for (const [code, description] of Object.entries(FINDING_CODES)) {
      expect(code).toMatch(/^[A-Z][A-Z0-9_]+$/);
      expect(description).not.toContain('\n');
      expect(description.length).toBeLessThan(110);
    }
  });

  it('maps every blocking source finding to a documented error code', () => {
    for (const code of Object.keys(FINDING_CODES) as FindingCode[]) {
      expect(Object.keys(ERROR_CODES)).toContain(errorCodeForFinding(code));
    }
    expect(errorCodeForFinding('SOURCE_WAL_LEVEL_NOT_LOGICAL')).toBe('SOURCE_WAL_LEVEL_NOT_LOGICAL');
    expect(errorCodeForFinding('SOURCE_SELECT_DENIED')).toBe('PERMISSION_DENIED');
  });
});

describe('snapshot readiness (the guard before creating a slot)', () => {
  it('returns only the source conditions that block a slot or publication', () => {
    const findings = computeSnapshotReadiness(
      sourceFacts({ walLevel: 'replica', largeObjects: 5, maxSlotWalKeepSizeMb: -1 }),
      null,
    );
    expect(codes(findings)).toEqual(['SOURCE_WAL_LEVEL_NOT_LOGICAL']);
    expect(computeSnapshotReadiness(sourceFacts(), null)).toEqual([]);
  });
});

describe('TimescaleDB within the whole preflight', () => {
  const timescale = {
    version: '2.28.3',
    unreadable: null,
    hypertables: [
      {
        schema: 'public',
        name: 'events',
        timeColumn: 'time',
        chunks: 1,
        compressedChunks: 0,
        compressionEnabled: false,
        hasReplicaIdentity: false,
        segmentBy: [],
        orderBy: [],
      },
    ],
    continuousAggregates: [],
    jobs: [],
    managedRelations: [
      { schema: 'public', name: 'events' },
      { schema: '_timescaledb_internal', name: '_hyper_1_1_chunk' },
    ],
    chunkSchemas: ['_timescaledb_internal'],
    compressionMarkers: true,
    tieredChunks: 0,
  };
  const keyless = (schema: string, name: string) =>
    table({ schema, name, primaryKey: null, replicaIdentity: 'default', hasReplicaIdentity: false });
  const source = {
    extensions: [
      { name: 'plpgsql', version: '1.0' },
      { name: 'timescaledb', version: '2.28.3' },
    ],
    tables: [
      keyless('public', 'events'),
      keyless('_timescaledb_internal', '_hyper_1_1_chunk'),
      keyless('public', 'log'),
    ],
    timescaledb: timescale,
  };

  it('lets the snapshot guard through without a superuser (a warning), and stops it without compression markers', () => {
    expect(codes(computeSnapshotReadiness(sourceFacts({ ...source, isSuperuser: true }), null))).toEqual([]);
    const findings = computeSnapshotReadiness(sourceFacts({ ...source, isSuperuser: false }), null);
    expect(findings.map((f) => [f.code, f.severity])).toEqual([['TIMESCALEDB_NOT_SUPERUSER', 'warning']]);
    const compressed = {
      ...source,
      isSuperuser: true,
      timescaledb: {
        ...timescale,
        compressionMarkers: false,
        hypertables: timescale.hypertables.map((h) => ({ ...h, compressionEnabled: true })),
      },
    };
    expect(codes(computeSnapshotReadiness(sourceFacts(compressed), null))).toEqual([
      'TIMESCALEDB_COMPRESSION_MARKERS_OFF',
    ]);
    expect(errorCodeForFinding('TIMESCALEDB_COMPRESSION_MARKERS_OFF')).toBe(
      'TIMESCALEDB_COMPRESSION_MARKERS_OFF',
    );
    expect(errorCodeForFinding('TIMESCALEDB_NOT_SUPPORTED_YET')).toBe('TIMESCALEDB_NOT_SUPPORTED_YET');
    expect(ERROR_CODES.TIMESCALEDB_NOT_SUPPORTED_YET[0]).toBe('preflight');
  });

  it('leaves hypertables and chunks out of the generic replica identity finding', () => {
    const findings = computeFindings(facts({ source }));
    expect(only(findings, 'TABLES_WITHOUT_REPLICA_IDENTITY').objects).toEqual(['public.log']);
    expect(only(findings, 'TIMESCALEDB_HYPERTABLES_WITHOUT_REPLICA_IDENTITY').objects).toEqual([
      'public.events',
    ]);
  });

  it('reports a target without TimescaleDB once, as TIMESCALEDB_MISSING_ON_TARGET', () => {
    const findings = computeFindings(facts({ source }));
    expect(codes(findings)).toContain('TIMESCALEDB_MISSING_ON_TARGET');
    expect(codes(findings)).not.toContain('TARGET_EXTENSION_UNAVAILABLE');
    // When the target's TimescaleDB could not be read, the generic check still names it.
    const unread = computeFindings(facts({ source, target: { timescaledb: null } }));
    expect(only(unread, 'TARGET_EXTENSION_UNAVAILABLE').objects).toEqual(['timescaledb']);
  });

  it('passes --allow-timescaledb-version-mismatch through to the version finding', () => {
    const target = {
      availableExtensions: ['plpgsql', 'timescaledb'],
      timescaledb: {
        installedVersion: '2.29.0',
        defaultVersion: '2.29.0',
        availableVersions: ['2.29.0'],
        preloaded: true,
      },
    };
    const strict = computeFindings(facts({ source, target }));
    expect(only(strict, 'TIMESCALEDB_VERSION_MISMATCH').severity).toBe('error');
    const allowed = computeFindings({ ...facts({ source, target }), allowTimescaledbVersionMismatch: true });
    expect(only(allowed, 'TIMESCALEDB_VERSION_MISMATCH').severity).toBe('warning');
  });
});

describe('rendering', () => {
  const report = buildPreflightReport(
    'default',
    computeFindings(
      facts({
        source: {
          walLevel: 'replica',
          tables: [table({ name: 'a', canSelect: false }), table({ name: 'b|c', canSelect: false })],
        },
      }),
    ),
  );

  it('prints findings grouped by severity, each with its fix, and the verdict', () => {
    const text = renderPreflightText(report);
    expect(text).toMatch(/^Preflight of migration 'default': 2 errors, 0 warnings, 2 informational\./);
    expect(text.indexOf('Errors:')).toBeLessThan(text.indexOf('Information:'));
    expect(text).toContain('  ✗ SOURCE_WAL_LEVEL_NOT_LOGICAL\n');
    expect(text).toContain('      fix: ALTER SYSTEM SET wal_level = logical;');
    // Multi-line fixes keep their lines aligned under the first.
    expect(text).toContain(
      '      fix: GRANT SELECT ON "public"."a" TO "app";\n           GRANT SELECT ON "public"."b|c"',
    );
    expect(
      text.trimEnd().endsWith('Preflight failed: fix the 2 errors above, then run preflight again.'),
    ).toBe(true);
  });

  it('writes a Markdown table whose cells cannot break the table', () => {
    const markdown = renderPreflightMarkdown(report);
    expect(markdown).toContain('### Preflight failed: migration `default`');
    expect(markdown).toContain('| Severity | Code | Observed | Fix |');
    const row = markdown.split('\n').find((line) => line.includes('SOURCE_SELECT_DENIED')) ?? '';
    expect(row).toContain('public."b\\|c"');
    expect(row).toContain('TO "app";<br>GRANT');
    // Five unescaped pipes: the row's four cells and nothing more.
    expect(row.replaceAll('\\|', '').split('|')).toHaveLength(6);
  });

  it('says a clean report passed', () => {
    expect(renderPreflightText(buildPreflightReport('x', []))).toContain('Preflight passed.');
    expect(renderPreflightMarkdown(buildPreflightReport('x', []))).toContain('### Preflight passed');
  });
});
