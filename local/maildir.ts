// Durable Maildir writes: stream into tmp/, fsync the file, move it into new/, fsync new/.
// A message in new/ is complete and on disk; a crash leaves at most a stray file in tmp/.
// Bytes are written exactly as read: nothing is added, nothing is converted.

import { constants as fsConstants } from 'node:fs';
import { copyFile, link, mkdir, open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

export const MAILDIR_SUBDIRS = ['tmp', 'new', 'cur'] as const;

/** A complete, fsynced file in a Maildir's tmp/, not yet delivered. */
export interface TmpFile {
  readonly name: string;
  readonly path: string;
  readonly bytes: number;
}

export interface StoredMessage {
  readonly name: string;
  /** the file in new/ */
  readonly path: string;
  readonly bytes: number;
}

// Errors for which a hard link cannot work but a copy can.
const LINK_UNSUPPORTED = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK']);

let deliveries = 0;

/**
 * A Maildir file name unique on this host: <sec>.M<usec>P<pid>Q<n>.<host>, as Dovecot and
 * qmail make them (Q<n> counts deliveries in this process). '/' and ':' in the host name are
 * written as \057 and \072, as the Maildir spec asks.
 */
export function uniqueName(): string {
  const micros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const sec = Math.floor(micros / 1_000_000);
  const usec = micros % 1_000_000;
  const host = hostname().replaceAll('/', '\\057').replaceAll(':', '\\072');
  deliveries += 1;
  return `${sec}.M${usec}P${process.pid}Q${deliveries}.${host}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates <dir> with tmp/ new/ cur/ (mode 0700) and makes any new directory entries durable. */
export async function ensureMaildir(dir: string): Promise<void> {
  const toSync = new Set<string>();
  const first = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (first !== undefined) {
    // Every directory from `first` down to `dir` is new: its parent must record it.
    for (let d = path.resolve(dir); ; d = path.dirname(d)) {
      toSync.add(path.dirname(d));
      if (d === path.resolve(first)) break;
    }
  }
  for (const sub of MAILDIR_SUBDIRS) {
    try {
      await mkdir(path.join(dir, sub), { mode: 0o700 });
      toSync.add(path.resolve(dir));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  for (const d of toSync) await fsyncDir(d);
}

/**
 * Streams `source` into <maildir>/tmp/<unique name> and fsyncs it. The source is always read
 * to its end, also after a write error or a discard, so a protocol stream stays in step;
 * the partial file is then removed. Returns null when `discardIf()` turned true (e.g. a size
 * limit was hit): from then on nothing more is written. The caller must ensureMaildir first.
 */
export async function writeTmp(
  maildir: string,
  source: Readable,
  opts: { discardIf?: () => boolean } = {},
): Promise<TmpFile | null> {
  const name = uniqueName();
  const file = path.join(maildir, 'tmp', name);
  let handle: FileHandle;
  try {
    handle = await open(file, 'wx', 0o600);
  } catch (err) {
    await drain(source).catch(() => undefined);
    throw err;
  }

  let failure: unknown = null;
  let discarded = false;
  let bytes = 0;
  try {
    for await (const chunk of source) {
      if (failure !== null || discarded) continue;
      if (opts.discardIf?.()) {
        discarded = true;
        continue;
      }
      if (!(chunk instanceof Uint8Array)) throw new TypeError('writeTmp: the source must yield bytes, not strings');
      try {
        await writeAll(handle, chunk);
        bytes += chunk.length;
      } catch (err) {
        failure = err;
      }
    }
    if (failure === null && !discarded && opts.discardIf?.()) discarded = true;
    if (failure === null && !discarded) await handle.sync();
  } catch (err) {
    // the source itself failed, or the fsync did
    failure ??= err;
  } finally {
    await handle.close().catch((err: unknown) => (failure ??= err));
  }
  if (failure !== null || discarded) {
    await discardTmp({ name, path: file, bytes });
    if (failure !== null) throw failure;
    return null;
  }
  return { name, path: file, bytes };
}

async function writeAll(handle: FileHandle, data: Uint8Array): Promise<void> {
  for (let offset = 0; offset < data.length; ) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    offset += bytesWritten;
  }
}

/** Reads a stream to its end, throwing the data away. */
export async function drain(source: Readable): Promise<void> {
  source.resume();
  await finished(source);
}

/** Removes a tmp file; a file already gone is fine. */
export async function discardTmp(tmp: TmpFile): Promise<void> {
  await unlink(tmp.path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Moves the tmp file of this Maildir into its new/ and fsyncs new/. */
export async function moveIntoNew(tmp: TmpFile, maildir: string): Promise<StoredMessage> {
  const target = path.join(maildir, 'new', tmp.name);
  await rename(tmp.path, target);
  await fsyncDir(path.join(maildir, 'new'));
  return { name: tmp.name, path: target, bytes: tmp.bytes };
}

/**
 * Delivers a copy of a tmp file (possibly another Maildir's) into <maildir>/new/ under the
 * same name: a hard link, or where links do not work, a copy that is fsynced in this Maildir's
 * tmp/ and renamed. Then fsyncs new/. The tmp file stays; discard it when all are done.
 */
export async function linkIntoNew(tmp: TmpFile, maildir: string): Promise<StoredMessage> {
  const target = path.join(maildir, 'new', tmp.name);
  try {
    await link(tmp.path, target);
  } catch (err) {
    if (!LINK_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    const copy = path.join(maildir, 'tmp', tmp.name);
    await copyFile(tmp.path, copy, fsConstants.COPYFILE_EXCL);
    try {
      const handle = await open(copy, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(copy, target);
    } catch (copyErr) {
      await unlink(copy).catch(() => undefined);
      throw copyErr;
    }
  }
  await fsyncDir(path.join(maildir, 'new'));
  return { name: tmp.name, path: target, bytes: tmp.bytes };
}

/** One message into one Maildir: create the dirs, write tmp/ durably, move into new/. */
export async function writeMaildirMessage(maildir: string, source: Readable): Promise<StoredMessage> {
  await ensureMaildir(maildir);
  const tmp = await writeTmp(maildir, source);
  if (tmp === null) throw new Error('unreachable: no discardIf was given');
  try {
    return await moveIntoNew(tmp, maildir);
  } catch (err) {
    await discardTmp(tmp).catch(() => undefined);
    throw err;
  }
}
