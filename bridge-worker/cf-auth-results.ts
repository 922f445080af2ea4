// Cloudflare's SPF/DKIM/DMARC/ARC verdicts on an incoming message, read from the
// block Email Routing wrote above the sender's message (cloudflare-block.ts) and
// nowhere else: a sender can write any field it likes below it, and when
// Cloudflare adds no verdicts of its own (workerd#6740) a sender's
// 'Authentication-Results: mx.cloudflare.net; dmarc=pass' would otherwise pass for
// Cloudflare's. Within the block, the topmost ARC-Authentication-Results,
// Authentication-Results and Received-SPF count, each only when it names a
// Cloudflare host. A verdict not found that way is 'none': never a guess
// (docs/security.md, "Trust").
import { NO_VERDICTS, isAuthResult, type AuthResult, type AuthVerdicts } from '../protocol/wire.ts';

/** Hosts Cloudflare names itself by in its verdict fields (mx.cloudflare.net, ...). */
const CLOUDFLARE_ID = /^(?:[a-z0-9-]+\.)*(?:cloudflare\.net|cloudflare-email\.com)$/i;
/** Longest header value looked at: Cloudflare's block is a few KiB at most. */
const MAX_VALUE = 16 * 1024;

/**
 * The first field of a value Headers.get() joined with ", " (field order is kept, so the
 * first one is the topmost). Authentication-Results has no top-level comma of its own
 * (RFC 8601 §2.2: tokens exclude ','), so the first one outside comments and quoted
 * strings is where the next field starts.
 */
export function firstField(joined: string): string {
  let depth = 0;
  let quoted = false;
  const end = Math.min(joined.length, MAX_VALUE);
  for (let i = 0; i < end; i++) {
    const c = joined[i];
    if (c === '\\' && (quoted || depth > 0)) i++;
    else if (quoted) { if (c === '"') quoted = false; }
    else if (c === '"' && depth === 0) quoted = true;
    else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (c === ',' && depth === 0) return joined.slice(0, i);
  }
  return joined.slice(0, end);
}

/** The value without its comments (RFC 5322 CFWS), unfolded; quoted strings kept. */
function stripComments(v: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i] ?? '';
    if (c === '\\' && (quoted || depth > 0)) {
      if (quoted) out += c + (v[i + 1] ?? '');
      i++;
    } else if (quoted) {
      out += c;
      if (c === '"') quoted = false;
    } else if (depth === 0 && c === '"') { quoted = true; out += c; }
    else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0) out += c === '\r' || c === '\n' || c === '\t' ? ' ' : c;
  }
  return out;
}

export interface ParsedResults { authservId: string; results: Map<string, AuthResult> }

/**
 * An Authentication-Results value (RFC 8601 §2.2), or an ARC-Authentication-Results one
 * (RFC 8617 §4.1.1: `i=N;` first). Per method the first result counts, except dkim: a
 * message with several signatures passes when one of them does. A result that is not an
 * RFC 8601 keyword is left out ('hardfail', RFC 5451's name, is 'fail').
 */
export function parseResults(value: string, arc = false): ParsedResults | null {
  let parts = stripComments(value).split(';').map((p) => p.trim());
  if (arc) {
    if (!/^i\s*=\s*\d+$/i.test(parts[0] ?? '')) return null;
    parts = parts.slice(1);
  }
  // authserv-id [ version ]
  const head = /^("?)([^\s";]+)\1(?:\s+\d+)?$/.exec(parts[0] ?? '');
  if (!head?.[2]) return null;
  const results = new Map<string, AuthResult>();
  for (const p of parts.slice(1)) {
    const m = /^([a-z0-9_-]+)(?:\s*\/\s*\d+)?\s*=\s*([a-z0-9_-]+)/i.exec(p);
    if (!m?.[1] || !m[2]) continue;
    const method = m[1].toLowerCase();
    let result = m[2].toLowerCase();
    if (result === 'hardfail') result = 'fail';
    if (!isAuthResult(result)) continue;
    const before = results.get(method);
    if (before === undefined || (method === 'dkim' && result === 'pass')) results.set(method, result);
  }
  return { authservId: head[2], results };
}

/** The topmost field of `name`, when its authserv-id is one of Cloudflare's. */
function fromCloudflare(headers: Headers, name: string, arc: boolean): Map<string, AuthResult> | null {
  const joined = headers.get(name);
  if (joined === null) return null;
  const parsed = parseResults(firstField(joined), arc);
  return parsed && CLOUDFLARE_ID.test(parsed.authservId) ? parsed.results : null;
}

/** SPF from the topmost Received-SPF (RFC 7208 §9.1), when its comment names a Cloudflare host. */
function spfField(headers: Headers): AuthResult | null {
  const joined = headers.get('received-spf');
  if (joined === null) return null;
  const m = /^\s*([a-z]+)\s*\(\s*([^\s:()]+)\s*:/i.exec(firstField(joined));
  if (!m?.[1] || !m[2] || !CLOUDFLARE_ID.test(m[2])) return null;
  const r = m[1].toLowerCase() === 'hardfail' ? 'fail' : m[1].toLowerCase();
  return isAuthResult(r) ? r : null;
}

/**
 * Each verdict from the first source that has it: Cloudflare's ARC-Authentication-Results
 * (sealed by its ARC-Seal), its Authentication-Results, then (spf only) its Received-SPF.
 */
export function cloudflareVerdicts(headers: Headers | undefined): AuthVerdicts {
  const out: AuthVerdicts = { ...NO_VERDICTS };
  if (!headers) return out;
  const sources = [fromCloudflare(headers, 'arc-authentication-results', true), fromCloudflare(headers, 'authentication-results', false)];
  for (const m of ['spf', 'dkim', 'dmarc', 'arc'] as const) {
    for (const s of sources) {
      const r = s?.get(m);
      if (r !== undefined) { out[m] = r; break; }
    }
  }
  if (!sources.some((s) => s?.has('spf'))) out.spf = spfField(headers) ?? 'none';
  return out;
}

/**
 * The verdicts in Cloudflare's block (`block`: its bytes, as cloudflareBlockLength found
 * them; empty when none was found: then every verdict is 'none'). The block is Cloudflare's
 * own writing, at most MAX_BLOCK_BYTES: decoding it as Latin-1 touches no byte of the mail.
 */
export function blockVerdicts(block: Uint8Array): AuthVerdicts {
  if (block.byteLength === 0) return { ...NO_VERDICTS };
  let text = '';
  for (let i = 0; i < block.byteLength; i += 0x2000) text += String.fromCharCode(...block.subarray(i, i + 0x2000));
  const headers = new Headers();
  for (const field of text.replace(/\r\n(?=[ \t])/g, '').split('\r\n')) {
    const colon = field.indexOf(':');
    if (colon > 0) headers.append(field.slice(0, colon).trim(), field.slice(colon + 1).trim());
  }
  return cloudflareVerdicts(headers);
}
