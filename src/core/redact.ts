// Keeps secrets out of everything we print or store: connection strings are shown without their
// password, and every known secret value is scrubbed from free text (server errors, child stderr).

const MASK = '********';

/** Hides the password of a libpq URI or keyword/value connection string. */
export function redactConnectionString(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, `$1${MASK}@`)
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)/gi, `$1${MASK}`);
}

export interface Redactor {
  redact(text: string): string;
  /** Remembers a secret; later redact calls mask it (and its URI-encoded form). */
  add(secret: string | undefined): void;
}

export function createRedactor(secrets: Iterable<string | undefined> = []): Redactor {
  const known = new Set<string>();
  const redactor: Redactor = {
    add(secret) {
      // Very short values would mask ordinary words; a 1-3 character password is its own problem.
      if (!secret || secret.length < 4) return;
      known.add(secret);
      known.add(encodeURIComponent(secret));
    },
    redact(text) {
      let out = redactConnectionString(text);
      for (const secret of [...known].sort((a, b) => b.length - a.length)) {
        out = out.split(secret).join(MASK);
      }
      return out;
    },
  };
  for (const s of secrets) redactor.add(s);
  return redactor;
}
