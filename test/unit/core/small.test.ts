import { describe, expect, it } from 'vitest';
import { computeExitCode, type ERROR_CODES, MigrationError } from '../../../src/core/errors';
import { formatBytes, formatDuration, parseByteSize } from '../../../src/core/format';
import { formatLsn, lsnDiffBytes, parseLsn } from '../../../src/core/lsn';
import { createRedactor, redactConnectionString } from '../../../src/core/redact';
import { displayName, quoteIdent, quoteLiteral } from '../../../src/core/sql';

describe('LSN maths', () => {
  it('parses, formats and subtracts positions across the 4 GB boundary', () => {
    const a = parseLsn('0/FFFFFFF0');
    const b = parseLsn('1/10');
    expect(formatLsn(b)).toBe('1/10');
    expect(lsnDiffBytes(b, a)).toBe(0x20);
    expect(lsnDiffBytes(a, b)).toBe(0);
    expect(() => parseLsn('nonsense')).toThrow(/not an LSN/);
  });
});

describe('redaction', () => {
  it('masks the password of URIs and keyword strings', () => {
    expect(redactConnectionString('postgresql://app:s3cr%40t@db:5432/x?sslmode=require')).toBe(
      'postgresql://app:********@db:5432/x?sslmode=require',
    );
    expect(redactConnectionString("host=db password='a b c' user=app")).toBe(
      'host=db password=******** user=app',
    );
    expect(redactConnectionString('host=db password=abc user=app')).toBe(
      'host=db password=******** user=app',
    );
  });

  it('scrubs known secrets from free text, raw and URI-encoded', () => {
    const r = createRedactor(['p@ss word!']);
    expect(r.redact('auth failed for p@ss word! and p%40ss%20word!')).toBe(
      'auth failed for ******** and ********',
    );
  });
});

describe('sizes and durations', () => {
  it('parses PostgreSQL-style sizes', () => {
    expect(parseByteSize('1GB')).toBe(1024 ** 3);
    expect(parseByteSize('500 kB')).toBe(500 * 1024);
    expect(parseByteSize('0')).toBe(0);
    expect(parseByteSize('lots')).toBeUndefined();
  });

  it('formats them for people', () => {
    expect(formatBytes(1536)).toBe('1.5 kB');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(2_500)).toBe('2.5s');
  });
});

describe('identifiers', () => {
  it('quotes identifiers and literals and shows plain names unquoted', () => {
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(displayName({ schema: 'public', name: 'Mixed Case' })).toBe('public."Mixed Case"');
  });
});

describe('errors', () => {
  it('maps each category to its documented exit code', () => {
    const exit = (code: keyof typeof ERROR_CODES) => computeExitCode(new MigrationError(code, 'm', 'h'));
    expect(exit('CONFIG_INVALID_MIGRATION_ID')).toBe(2);
    expect(exit('PREFLIGHT_FAILED')).toBe(3);
    expect(exit('COPY_FAILED')).toBe(4);
    expect(exit('VALIDATION_MISMATCH')).toBe(5);
    expect(computeExitCode(new Error('bug'))).toBe(1);
  });
});
