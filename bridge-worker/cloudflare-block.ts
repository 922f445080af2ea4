// Finds the block Cloudflare Email Routing writes above the sender's message on each
// delivery attempt (docs/architecture.md, "The Cloudflare block"): its own Received:,
// its ARC set, its verdicts. A bounded scan of bytes, never a decode of the message:
// it runs in the isolate on every ingest, inside the Free plan's 10 ms of CPU.

/** At most this many leading bytes are looked at; a block that does not end in them is not stripped. */
export const MAX_BLOCK_BYTES = 8 * 1024;

/** The one field a block starts with: Cloudflare's own trace line. */
const CF_RECEIVED = /^Received:[^]*\bby cloudflare-email\.com\b/i;
/** ARC-Seal / ARC-Message-Signature signed by Cloudflare (a forwarder's own ARC set is the sender's). */
const CF_ARC_SIGNED = /^ARC-(Seal|Message-Signature):[^]*\bd=cloudflare-email\.com\b/i;
/** Cloudflare's ARC-Authentication-Results: the verdicts its ARC set seals. */
const CF_ARC_RESULTS = /^ARC-Authentication-Results:\s*i=\d+\s*;\s*mx\.cloudflare\.net\s*;/i;
/**
 * Fields Cloudflare writes only after its ARC-Authentication-Results (every sample that has them):
 * a sender can write the same names, so in a block with no verdicts of its own (workerd#6740)
 * they are the sender's first fields, never Cloudflare's.
 */
const CF_AFTER_RESULTS = /^(Authentication-Results:\s*mx\.cloudflare\.net\s*;|Received-SPF:|X-CF-[A-Za-z0-9-]+:)/i;
/** The names a block's later fields may have. */
const BLOCK_NAMES = /^(ARC-Seal|ARC-Message-Signature|ARC-Authentication-Results|Received-SPF|Authentication-Results|X-CF-[A-Za-z0-9-]+):/i;
/** Bytes enough to read any of those names and its colon. */
const MAX_NAME = 80;

/** Whether `field` is Cloudflare's, given whether the block so far holds its ARC-Authentication-Results. */
function isCloudflareField(field: string, verdicts: boolean): boolean {
  return CF_ARC_SIGNED.test(field) || CF_ARC_RESULTS.test(field) || (verdicts && CF_AFTER_RESULTS.test(field));
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;

/**
 * Length of the Cloudflare block at the start of `bytes`: the leading run of header fields
 * Cloudflare adds, beginning with its `Received: … by cloudflare-email.com`, up to the first
 * field it did not add. 0 when unsure: no such Received first, a line not ending in CRLF, or
 * the run's end not seen within MAX_BLOCK_BYTES. Only one Received belongs to the block: a
 * sender's own Received or ARC set below it is the sender's message, and so are its
 * Authentication-Results / Received-SPF / X-CF-* directly below a block that holds no
 * ARC-Authentication-Results of Cloudflare's (they fill no verdict and stay in the dedupe key). `whole`: `bytes` is the
 * entire message, so a block that ends where the bytes end (an empty message) is a block.
 */
export function cloudflareBlockLength(bytes: Uint8Array, whole = false): number {
  const end = Math.min(bytes.byteLength, MAX_BLOCK_BYTES);
  const atEnd = (i: number): boolean => whole && i === bytes.byteLength && i <= MAX_BLOCK_BYTES;
  const raw = bytes.subarray(0, end);  // every search below stays within the bound
  let start = 0;       // start of the current field
  let fields = 0;
  let verdicts = false;  // Cloudflare's ARC-Authentication-Results seen
  for (;;) {
    if (start + 1 < end && raw[start] === CR && raw[start + 1] === LF) return start;  // the blank line ends the header section
    // A field by a name Cloudflare does not write ends the block, however long that field is.
    const seen = Math.min(end, start + MAX_NAME);
    const lf = raw.indexOf(LF, start);
    if (seen - start < MAX_NAME && lf < 0) return 0;  // the next field's name may be cut off: unsure
    const name = latin1(raw.subarray(start, seen));
    if (!(fields === 0 ? /^Received:/i : BLOCK_NAMES).test(name)) return fields > 0 ? start : 0;
    // Its first line and its folded continuation lines, each ending in CRLF.
    let i = start;
    for (;;) {
      const lf = raw.indexOf(LF, i);
      if (lf < 0) return 0;                              // the field's end is not in sight: unsure
      if (lf === i || raw[lf - 1] !== CR) return 0;      // a bare LF: not Cloudflare's writing
      i = lf + 1;
      if (i >= end && !atEnd(i)) return 0;               // cannot see whether the field goes on
      if (raw[i] !== SP && raw[i] !== TAB) break;
    }
    // Of Cloudflare's, by what it says: a second Received, a forwarder's ARC set are the sender's.
    const field = latin1(raw.subarray(start, Math.min(i, start + 1024)));
    if (fields === 0 ? !CF_RECEIVED.test(field) : !isCloudflareField(field, verdicts)) return fields > 0 ? start : 0;
    if (fields > 0 && CF_ARC_RESULTS.test(field)) verdicts = true;
    fields++;
    start = i;
    if (atEnd(start)) return start;  // the block was all there is: an empty message under it
  }
}

function latin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.byteLength; i += 0x2000) s += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  return s;
}
