// Log sequence numbers as branded bigints: parsed once at the adapter edge, compared and subtracted here.

export type Lsn = bigint & { readonly __brand: 'Lsn' };

export function parseLsn(text: string): Lsn {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!match) throw new TypeError(`not an LSN: '${text}'`);
  return ((BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)) as Lsn;
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function lsnDiffBytes(later: Lsn, earlier: Lsn): number {
  const diff = later - earlier;
  return diff > 0n ? Number(diff) : 0;
}
