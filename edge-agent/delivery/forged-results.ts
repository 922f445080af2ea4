// RFC 8601 §5 on the way into Dovecot: an Authentication-Results field in the
// message's header section that claims our authserv-id was not written by us
// (ours is prepended outside the message bytes), so it is renamed to
// X-Claimed-Auth-Results: a name of the same length, so the message keeps its
// size (SIZE=, the trace) and no byte of the sender's content is lost but the
// field name. A streaming byte transform: a field may straddle chunks; it stops
// at the blank line that ends the header section; it holds at most MAX_PENDING
// bytes (one field's start) at a time. The size and SHA-256 the object sent are
// checked on the bytes as received (inbound.ts), before this runs.

const NAME = Buffer.from('authentication-results', 'latin1');
/** Same length as NAME (22 bytes): the message's size does not change. */
export const RENAMED = Buffer.from('X-Claimed-Auth-Results', 'latin1');
/** A field whose authserv-id is not known within this many bytes is renamed: fail closed. */
export const MAX_PENDING = 4096;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
const lower = (b: number): number => (b >= 0x41 && b <= 0x5a ? b + 0x20 : b);

type State =
  | 'start'     // at the start of a header line
  | 'start-cr'  // a CR at the start of a line: CRLF here ends the header section
  | 'line'      // inside a line that is not ours to look at: pass to its LF
  | 'name'      // the line starts like NAME: bytes held
  | 'colon'     // NAME matched: WSP, then ':'
  | 'cfws'      // after ':' before the authserv-id: WSP, folding, comments
  | 'cfws-lf'   // an LF in CFWS: a WSP next continues the field, anything else ends it
  | 'comment'
  | 'token'
  | 'quoted'
  | 'body';     // after the header section: pass everything

export class ForgedResultsFilter {
  readonly #id: Buffer;
  #state: State = 'start';
  /** Bytes of the field being looked at, not yet passed on. */
  /** Allocated at the first held byte: most messages never hold one (no line starting like NAME). */
  #held: Uint8Array | null = null;
  #fill = 0;
  #matched = 0;
  #depth = 0;
  #escaped = false;
  /** The authserv-id read so far (lowercase ASCII). */
  readonly #seen: number[] = [];
  /** Fields renamed so far. */
  renamed = 0;

  constructor(authservId: string) {
    this.#id = Buffer.from(authservId.toLowerCase(), 'latin1');
  }

  /** True once the header section has ended: the rest passes untouched. */
  get inBody(): boolean {
    return this.#state === 'body';
  }

  /** The bytes to pass on for `chunk`: slices of it, and held bytes once decided. */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.#state === 'body') {
      if (chunk.byteLength > 0) out.push(chunk);
      return out;
    }
    let from = 0;  // chunk[from, i) passes unchanged
    for (let i = 0; i < chunk.byteLength; i++) {
      if (this.#state === 'line') {
        // Nothing in a line not ours to look at matters but its LF: found natively, not byte by
        // byte in JS (most of a header section is such lines).
        const lf = chunk.indexOf(LF, i);
        if (lf < 0) break;
        i = lf;
      }
      const b = chunk[i] as number;
      if (this.#state === 'start' || this.#state === 'start-cr' || this.#state === 'line') {
        if (!this.#lineByte(b)) continue;
        // The line starts like NAME: hold from here.
        if (i > from) out.push(chunk.subarray(from, i));
        this.#hold(b);
        continue;
      }
      if (this.#current() === 'body') {
        out.push(chunk.subarray(from));
        return out;
      }
      // Holding a field's start.
      this.#hold(b);
      const verdict = this.#fieldByte(b);
      if (verdict === null && this.#fill <= MAX_PENDING) continue;
      // Decided (or held too long: renamed, fail closed).
      const last = verdict === 'ended' ? this.#fill - 1 : this.#fill;
      this.#release(out, verdict === 'ended' ? false : verdict ?? true, last);
      from = i + 1;
      if (verdict === 'ended') {
        // The field ended before any authserv-id; this byte starts the next line.
        this.#state = 'start';
        if (this.#lineByte(b)) { this.#hold(b); continue; }
        from = i;
        continue;
      }
      this.#state = b === LF ? 'start' : 'line';
    }
    if (!this.#holding()) {
      if (from < chunk.byteLength) out.push(chunk.subarray(from));
    }
    return out;
  }

  /** The message ended: held bytes go out, renamed when they claim our id or could not be read. */
  end(): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (!this.#holding()) return out;
    const st = this.#state;
    const rename = st === 'token' || st === 'quoted' ? this.#isOurs() : st === 'cfws' || st === 'comment' || st === 'cfws-lf' ? st === 'comment' : false;
    this.#release(out, rename, this.#fill);
    this.#state = 'line';
    return out;
  }

  /** The state, read afresh (the byte handlers change it). */
  #current(): State {
    return this.#state;
  }

  #holding(): boolean {
    return this.#state !== 'start' && this.#state !== 'start-cr' && this.#state !== 'line' && this.#state !== 'body';
  }

  #hold(b: number): void {
    (this.#held ??= new Uint8Array(MAX_PENDING + 1))[this.#fill++] = b;
  }

  /** One byte outside a held field; true when it starts a held one. */
  #lineByte(b: number): boolean {
    switch (this.#state) {
      case 'start':
        if (b === LF) this.#state = 'body';
        else if (b === CR) this.#state = 'start-cr';
        else if (lower(b) === NAME[0]) {
          this.#state = 'name';
          this.#matched = 1;
          return true;
        } else this.#state = 'line';
        return false;
      case 'start-cr':
        this.#state = b === LF ? 'body' : 'line';
        return false;
      default:
        if (b === LF) this.#state = 'start';
        return false;
    }
  }

  /** One held byte; a decision (rename or not), 'ended' (the field ended, this byte not its own), or null. */
  #fieldByte(b: number): boolean | 'ended' | null {
    switch (this.#state) {
      case 'name':
        if (lower(b) !== NAME[this.#matched]) return false;
        if (++this.#matched === NAME.length) this.#state = 'colon';
        return null;
      case 'colon':
        if (b === SP || b === HT) return null;
        if (b !== 0x3a) return false;
        this.#state = 'cfws';
        return null;
      case 'cfws':
        if (b === SP || b === HT || b === CR) return null;
        if (b === LF) { this.#state = 'cfws-lf'; return null; }
        if (b === 0x28) { this.#state = 'comment'; this.#depth = 1; return null; }
        if (b === 0x22) { this.#state = 'quoted'; return null; }
        if (b === 0x3b) return false;  // no authserv-id: claims nothing
        this.#state = 'token';
        return this.#idByte(b);
      case 'cfws-lf':
        if (b === SP || b === HT) { this.#state = 'cfws'; return null; }
        return 'ended';
      case 'comment':
        if (this.#escaped) this.#escaped = false;
        else if (b === 0x5c) this.#escaped = true;
        else if (b === 0x28) this.#depth++;
        else if (b === 0x29 && --this.#depth === 0) this.#state = 'cfws';
        return null;
      case 'token':
        if (b === SP || b === HT || b === CR || b === LF || b === 0x3b || b === 0x28 || b === 0x22) return this.#isOurs();
        return this.#idByte(b);
      case 'quoted':
        if (this.#escaped) { this.#escaped = false; return this.#idByte(b); }
        if (b === 0x5c) { this.#escaped = true; return null; }
        if (b === 0x22) return this.#isOurs();
        if (b === CR || b === LF) return null;  // folding inside the quotes
        return this.#idByte(b);
      default:
        return false;
    }
  }

  /** An id longer than ours is not ours: decided without holding more. */
  #idByte(b: number): false | null {
    this.#seen.push(lower(b));
    return this.#seen.length > this.#id.byteLength ? false : null;
  }

  #isOurs(): boolean {
    return this.#seen.length === this.#id.byteLength && this.#seen.every((c, i) => c === this.#id[i]);
  }

  /** Passes on held[0, n), the name replaced when `rename`; resets the field state. */
  #release(out: Uint8Array[], rename: boolean, n: number): void {
    const held = this.#held === null ? new Uint8Array(0) : this.#held.slice(0, n);
    if (rename && n >= NAME.length) {
      held.set(RENAMED, 0);
      this.renamed++;
    }
    if (held.byteLength > 0) out.push(held);
    this.#fill = 0;
    this.#matched = 0;
    this.#depth = 0;
    this.#escaped = false;
    this.#seen.length = 0;
  }
}

/** `body` with every Authentication-Results that claims `authservId` renamed (see above). */
export async function* renameForged(body: AsyncIterable<Uint8Array>, authservId: string, onRenamed?: (n: number) => void): AsyncIterable<Uint8Array> {
  const f = new ForgedResultsFilter(authservId);
  for await (const chunk of body) {
    for (const piece of f.push(chunk)) yield piece;
  }
  for (const piece of f.end()) yield piece;
  if (f.renamed > 0) onRenamed?.(f.renamed);
}
