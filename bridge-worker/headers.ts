// The header section of a stored message, for the admin API's display only: the
// message itself is never decoded, and nothing decoded here goes back into mail.

const MAX_HEADER_BYTES = 64 * 1024;

/** Bytes up to the blank line that ends the header section (at most 64 KiB). */
export function headerSection(first: Uint8Array): Uint8Array {
  const end = Math.min(first.byteLength, MAX_HEADER_BYTES);
  for (let i = 0; i < end; i++) {
    if (first[i] !== 0x0a) continue;
    if (first[i + 1] === 0x0a) return first.slice(0, i + 1);
    if (first[i + 1] === 0x0d && first[i + 2] === 0x0a) return first.slice(0, i + 1);
  }
  return first.slice(0, end);
}

/** Unfolded header fields; 8-bit bytes shown as UTF-8 where valid (U+FFFD otherwise). */
export function parseHeaders(section: Uint8Array): { name: string; value: string }[] {
  const text = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(section);
  const fields: { name: string; value: string }[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === '') continue;
    const last = fields[fields.length - 1];
    if ((line.startsWith(' ') || line.startsWith('\t')) && last) {
      last.value += ' ' + line.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon > 0) fields.push({ name: line.slice(0, colon), value: line.slice(colon + 1).trim() });
  }
  return fields;
}
