// Scoped pg connections for the benchmarks: connect, run, always end in finally.
import pg from 'pg';

export async function withPgClient<T>(uri: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: uri, application_name: 'plm-bench' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
