// systemd's end of $NOTIFY_SOCKET for the Type=notify tests: a datagram socket, its messages
// collected as text, one line per datagram (python3: a listener started before the agent).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NotifySocket {
  /** A fresh temp dir holding the socket (a unix socket path has at most 107 bytes: a test dir's is longer). */
  dir: string;
  socket: string;
  /** Everything received so far. */
  got(): string;
  /** Waits, 20 s at most, until `ok()`; the error names `what` and shows what came. */
  until(what: string, ok: () => boolean): Promise<void>;
}

/**
 * `repr`: each datagram as Python's repr, quoted, with its newlines escaped, so a test can tell
 * one datagram of two lines from two datagrams; otherwise as sent.
 */
export async function listenNotify(t: { teardown(fn: () => unknown): void }, o: { repr?: boolean } = {}): Promise<NotifySocket> {
  const dir = await mkdtemp(join(tmpdir(), 'mb-notify-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const socket = join(dir, 'notify.sock');
  const listener = spawn('python3', ['-c', [
    'import socket, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.bind(sys.argv[1])',
    `while True: print(${o.repr ? 'repr(s.recv(4096).decode())' : 's.recv(4096).decode()'}, flush=True)`,
  ].join('\n'), socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { listener.kill(); });
  let got = '';
  listener.stdout.on('data', (c: Buffer) => { got += c.toString('utf8'); });
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    for (let i = 0; !ok(); i++) {
      if (i > 400) throw new Error(`no ${what} within 20 s; got ${JSON.stringify(got)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until('listening socket', () => existsSync(socket));
  return { dir, socket, got: () => got, until };
}
