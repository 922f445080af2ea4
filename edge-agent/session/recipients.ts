// The recipients list the agent publishes to the queue object, so that mail to an address
// the home server does not have is refused at the Worker (550 5.1.1) instead of bouncing
// later. Read from the operator's file (one address or '@domain' a line), canonical (sorted,
// unique), named by its digest and cut into `recipients` frames that each stay well under
// the object's frame limit. Watched: an edited file is published again on every session.
import { createHash } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import {
  MAX_CONTROL_FRAME, MAX_RECIPIENT_PARTS, encodeFrame, isRecipientEntry, type RecipientsFrame,
} from '../../protocol/wire.ts';
import { ConfigError } from '../agent-config.ts';
import type { Logger } from '../ops/log.ts';

/** A frame's budget: well under MAX_CONTROL_FRAME, which the object measures in UTF-16 units. */
export const FRAME_BUDGET = Math.floor(MAX_CONTROL_FRAME * 3 / 4);
/** How often the file is looked at (stat): catches an editor's rename-replace as well as a rewrite. */
export const POLL_MS = 2_000;
/** After a change is seen, wait this long before reading, so a file still being written is read whole. */
const SETTLE_MS = 300;

export type Parsed = { ok: true; entries: string[] } | { ok: false; error: string };

/**
 * One entry per line, trimmed and lowercased; blank lines and lines starting with '#' are
 * skipped. Returns the canonical list (sorted, unique) or the first bad line as `file:line`.
 */
export function parseRecipients(text: string, file: string): Parsed {
  const entries = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const entry = line.toLowerCase();
    // U+FFFD: the file is not UTF-8 here; an entry with it would never match a real address.
    if (!isRecipientEntry(entry) || entry.includes('\uFFFD')) {
      return { ok: false, error: `${file}:${i + 1}: not an address or @domain: ${JSON.stringify(line.slice(0, 100))}` };
    }
    entries.add(entry);
  }
  // Code-unit order, the same in every runtime: the digest must not depend on a locale.
  return { ok: true, entries: [...entries].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)) };
}

/** SHA-256 hex of the entries joined with '\n': the list's name on the wire. */
export function listDigest(entries: readonly string[]): string {
  return createHash('sha256').update(entries.join('\n'), 'utf8').digest('hex');
}

export type Framed = { ok: true; frames: RecipientsFrame[] } | { ok: false; error: string };

/**
 * The list as `recipients` frames, in order, each encoding to at most FRAME_BUDGET
 * characters. No entries: one empty frame, which tells the object "no list".
 */
export function recipientFrames(entries: readonly string[], delimiter: string): Framed {
  const digest = listDigest(entries);
  const frame = (part: number, parts: number, list: string[]): RecipientsFrame => ({ type: 'recipients', digest, part, parts, delimiter, entries: list });
  // The empty frame with the widest part numbers it can have: each entry then adds its JSON and a comma.
  const base = encodeFrame(frame(MAX_RECIPIENT_PARTS, MAX_RECIPIENT_PARTS, [])).length;
  const groups: string[][] = [[]];
  let size = base;
  for (const e of entries) {
    const add = JSON.stringify(e).length + 1;
    const last = groups[groups.length - 1] ?? [];
    if (size + add > FRAME_BUDGET && last.length > 0) {
      groups.push([e]);
      size = base + add;
    } else {
      last.push(e);
      size += add;
    }
  }
  if (groups.length > MAX_RECIPIENT_PARTS) {
    return { ok: false, error: `${entries.length} entries need ${groups.length} frames; the protocol allows ${MAX_RECIPIENT_PARTS} (about 10 MB)` };
  }
  return { ok: true, frames: groups.map((g, i) => frame(i, groups.length, g)) };
}

export type Loaded = { ok: true; frames: RecipientsFrame[]; entries: number } | { ok: false; error: string };

/** Reads, parses and frames the file: the whole way from a path to what is sent. */
export function loadRecipients(file: string, delimiter: string): Loaded {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { ok: false, error: `${file}: cannot read: ${(err as Error).message}` };
  }
  const parsed = parseRecipients(text, file);
  if (!parsed.ok) return parsed;
  const framed = recipientFrames(parsed.entries, delimiter);
  return framed.ok ? { ...framed, entries: parsed.entries.length } : { ok: false, error: `${file}: ${framed.error}` };
}

/**
 * The list as published now. Without a file: the empty list (publishing it clears a list an
 * earlier configuration left at the object). With one: read at construction, where a bad
 * file is a ConfigError (the agent does not start); watched from start() on, where a bad
 * edit is logged as a warning and the last good list stays published.
 */
export class RecipientsSource {
  readonly #file: string | null;
  readonly #delimiter: string;
  readonly #log: Logger;
  readonly #pollMs: number;
  #frames: RecipientsFrame[];
  #settle: NodeJS.Timeout | null = null;
  #listener: ((cur: Stats, prev: Stats) => void) | null = null;
  /** Called with the new frames after the file changed to another valid list. */
  onChange: (frames: readonly RecipientsFrame[]) => void = () => {};

  constructor(o: { file: string | null; delimiter: string; log: Logger; pollMs?: number }) {
    this.#file = o.file;
    this.#delimiter = o.delimiter;
    this.#log = o.log;
    this.#pollMs = o.pollMs ?? POLL_MS;
    if (o.file === null) {
      const empty = recipientFrames([], o.delimiter);
      this.#frames = empty.ok ? empty.frames : [];
      return;
    }
    const loaded = loadRecipients(o.file, o.delimiter);
    if (!loaded.ok) throw new ConfigError(`recipientsFile: ${loaded.error}`);
    this.#frames = loaded.frames;
    this.#log('recipients.loaded', { file: o.file, entries: loaded.entries, digest: this.digest, parts: loaded.frames.length });
  }

  /** What a session sends right after its welcome. */
  get frames(): readonly RecipientsFrame[] {
    return this.#frames;
  }

  get digest(): string {
    return this.#frames[0]?.digest ?? listDigest([]);
  }

  start(): void {
    if (this.#file === null || this.#listener) return;
    this.#listener = (cur: Stats, prev: Stats) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.ino === prev.ino && cur.size === prev.size) return;
      if (this.#settle) clearTimeout(this.#settle);
      this.#settle = setTimeout(() => this.reload(), SETTLE_MS);
      this.#settle.unref();
    };
    // watchFile polls stat(): unlike fs.watch on the file, it follows the path across an
    // editor's write-new-then-rename, a deleted and re-created file, and network mounts.
    watchFile(this.#file, { interval: this.#pollMs, persistent: false }, this.#listener);
    // watchFile compares with its own first stat, taken some time after this call: an edit
    // made since the file was read would never be seen. One reload once it has its first stat
    // closes that gap (a reload of the same list publishes nothing).
    this.#settle = setTimeout(() => this.reload(), Math.max(SETTLE_MS, this.#pollMs));
    this.#settle.unref();
  }

  /** Reads the file again; publishes when it holds another valid list. Returns whether it did. */
  reload(): boolean {
    this.#settle = null;
    if (this.#file === null) return false;
    const loaded = loadRecipients(this.#file, this.#delimiter);
    if (!loaded.ok) {
      this.#log('recipients.invalid', { file: this.#file, error: loaded.error, kept: this.digest });
      return false;
    }
    const digest = loaded.frames[0]?.digest;
    if (digest === this.digest) return false;
    this.#frames = loaded.frames;
    this.#log('recipients.loaded', { file: this.#file, entries: loaded.entries, digest, parts: loaded.frames.length });
    this.onChange(this.#frames);
    return true;
  }

  stop(): void {
    if (this.#settle) clearTimeout(this.#settle);
    this.#settle = null;
    if (this.#file !== null && this.#listener) unwatchFile(this.#file, this.#listener);
    this.#listener = null;
  }
}
