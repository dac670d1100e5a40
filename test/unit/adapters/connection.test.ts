import { describe, expect, it } from 'vitest';
import { parseConnInfo, toLibpqEnv, toPgConfig } from '../../../src/adapters/postgres/connection';

describe('connection strings', () => {
  it('reads a URI into libpq keywords with a redacted display form', () => {
    const info = parseConnInfo(
      'postgresql://app:p%40ss@db.example:6543/shop?sslmode=disable&application_name=x',
      'source',
    );
    expect(info.keywords).toEqual({
      host: 'db.example',
      port: '6543',
      user: 'app',
      password: 'p@ss',
      dbname: 'shop',
      sslmode: 'disable',
      application_name: 'x',
    });
    expect(info.display).not.toContain('p%40ss');
  });

  it('reads a keyword string with quoted values', () => {
    const info = parseConnInfo(
      "host=/var/run/postgresql dbname='my db' user=o\\'k password='a\\'b'",
      'target',
    );
    expect(info.keywords).toEqual({
      host: '/var/run/postgresql',
      dbname: 'my db',
      user: "o'k",
      password: "a'b",
    });
  });

  it('rejects garbage with CONFIG_INVALID_URI and no password in the message', () => {
    expect(() => parseConnInfo('postgresql://u:secretpw@[bad', 'source')).toThrow(
      expect.objectContaining({
        code: 'CONFIG_INVALID_URI',
        message: expect.not.stringContaining('secretpw'),
      }),
    );
    expect(() => parseConnInfo('just words', 'source')).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID_URI' }),
    );
  });

  it('hands child tools the password through PGPASSWORD, and node-postgres the same server', () => {
    const info = parseConnInfo('postgresql://app:pw@db:6543/shop?sslmode=require', 'source');
    const env = toLibpqEnv(info, { PATH: '/bin' });
    expect(env).toMatchObject({
      PGHOST: 'db',
      PGPORT: '6543',
      PGUSER: 'app',
      PGPASSWORD: 'pw',
      PGDATABASE: 'shop',
      PGSSLMODE: 'require',
    });
    const config = toPgConfig(info);
    expect(config).toMatchObject({ host: 'db', port: 6543, user: 'app', password: 'pw', database: 'shop' });
    expect(config.ssl).toBeTruthy();
  });
});
