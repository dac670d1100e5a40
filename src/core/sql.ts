// SQL text helpers: the one place identifiers and literals are quoted. Values go as $n parameters;
// these are for identifiers and for the few statements (replication protocol, DDL) that take no parameters.

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  // standard_conforming_strings is on in every supported server, so only quotes need doubling.
  return `'${value.replaceAll("'", "''")}'`;
}

export interface QualifiedName {
  schema: string;
  name: string;
}

export function quoteQualified(table: QualifiedName): string {
  return `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
}

/** Human-facing name: schema.name, quoting only where needed. */
export function displayName(table: QualifiedName): string {
  const part = (s: string) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : quoteIdent(s));
  return `${part(table.schema)}.${part(table.name)}`;
}
