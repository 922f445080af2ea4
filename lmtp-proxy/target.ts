// Where the client delivers: an LMTP or SMTP server over TCP, or LMTP over a unix socket.

export type Target =
  | { protocol: 'lmtp' | 'smtp'; host: string; port: number }
  | { protocol: 'lmtp'; path: string };

// No standard port exists for LMTP; 24 is the "any private mail system" port Dovecot uses.
const DEFAULT_PORT = { lmtp: 24, smtp: 25 } as const;
const TCP = /^(lmtp|smtp):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?\/?$/;
const UNIX = 'lmtp+unix:';

/**
 * 'lmtp://127.0.0.1:24', 'lmtp://[::1]:24', 'smtp://mx.example:25', 'lmtp+unix:/run/dovecot/lmtp'.
 * The port may be left out (lmtp 24, smtp 25). Throws a TypeError naming the bad value.
 */
export function parseTarget(url: string): Target {
  const bad = (why: string): TypeError => new TypeError(`invalid target ${JSON.stringify(url)}: ${why}`);
  if (typeof url !== 'string') throw bad('not a string');
  if (url.startsWith(UNIX)) {
    const path = url.slice(UNIX.length);
    if (!path.startsWith('/')) throw bad('the socket path must be absolute');
    if (/[\0\r\n]/.test(path)) throw bad('the socket path contains a control character');
    return { protocol: 'lmtp', path };
  }
  const m = TCP.exec(url);
  if (!m) throw bad("expected lmtp://host:port, smtp://host:port or lmtp+unix:/path");
  const protocol = m[1] === 'smtp' ? 'smtp' : 'lmtp';
  const host = (m[2] ?? '').replace(/^\[(.*)\]$/, '$1');
  const port = m[3] === undefined ? DEFAULT_PORT[protocol] : Number(m[3]);
  if (port < 1 || port > 65535) throw bad(`port ${port} is out of range`);
  return { protocol, host, port };
}

export function formatTarget(t: Target): string {
  if ('path' in t) return UNIX + t.path;
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.protocol}://${host}:${t.port}`;
}
