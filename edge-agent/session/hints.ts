// What to check when the agent cannot open its session: the connect.failed line says it
// in words an operator can act on, next to the raw error.

/** A hint for a failed connection attempt to `workerUrl`, or null when the error says enough. */
export function connectHint(error: string, workerUrl: string): string | null {
  let host = workerUrl;
  try {
    host = new URL(workerUrl).host;
  } catch {
    // validated at start; keep the string
  }
  const status = /HTTP ([0-9]{3})/.exec(error)?.[1];
  if (status === '401' || status === '403') {
    return "the Worker refused the token: check MAILBRIDGE_TOKEN / tokenFile against the Worker's AGENT_TOKENS secret";
  }
  if (status === '404') return `no /agent here: check workerUrl (wss://<your worker>/agent), now ${workerUrl}`;
  if (status !== undefined && status.startsWith('5')) return 'the Worker failed to answer: see its log (wrangler tail) for config.invalid';
  if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ECONNRESET|ETIMEDOUT|handshake has timed out/.test(error)) {
    return `cannot reach ${host}: check workerUrl and the network`;
  }
  if (/certificate|CERT_|SSL|TLS/i.test(error)) return `TLS with ${host} failed: check workerUrl (wss:// to the Worker's own host name) and the system's clock and CA certificates`;
  return null;
}
