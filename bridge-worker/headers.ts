// The header section of a stored message, for the admin API's display and for the
// bounce task (as bytes): the message itself is never decoded, and nothing decoded
// here goes back into mail.

import { MAX_BOUNCE_HEADER_BYTES } from '../protocol/wire.ts';

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

/**
 * The header section as it travels with a bounce task: base64 of at most
 * MAX_BOUNCE_HEADER_BYTES, cut after the last whole line that fits (RFC 3462 allows a cut).
 */
export function bounceHeaders(section: Uint8Array): string {
  let end = section.byteLength;
  if (end > MAX_BOUNCE_HEADER_BYTES) {
    end = section.lastIndexOf(0x0a, MAX_BOUNCE_HEADER_BYTES - 1) + 1;
    if (end <= 0) end = MAX_BOUNCE_HEADER_BYTES;
  }
  let bin = '';
  for (let i = 0; i < end; i += 0x8000) bin += String.fromCharCode(...section.subarray(i, Math.min(end, i + 0x8000)));
  return btoa(bin);
}
