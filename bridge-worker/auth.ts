// Bearer-token checks. Tokens come only from the Authorization header (never a
// query string, which ends up in logs) and are compared in constant time.

const encoder = new TextEncoder();

function bearer(request: Request): string | null {
  const h = request.headers.get('Authorization');
  if (h === null) return null;
  const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(h);
  return m?.[1] ?? null;
}

function digest(s: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest('SHA-256', encoder.encode(s));
}

/**
 * Digests of the configured tokens, once per isolate: they were digested again on every
 * request. Keyed by the token itself, so a changed secret gets its own entry. Only configured
 * tokens go in (a handful per deployment), never a presented one: that would let any client
 * grow the map. The bytes are kept, not the promise: a promise of one request awaited by
 * another is what workerd warns about.
 */
const configured = new Map<string, ArrayBuffer>();

async function configuredDigest(token: string): Promise<ArrayBuffer> {
  const known = configured.get(token);
  if (known !== undefined) return known;
  const d = await digest(token);
  configured.set(token, d);
  return d;
}

/**
 * True when the request carries one of `tokens`; every token is compared, match or not.
 * Digests are compared, not the strings, so the comparison is constant-time whatever the
 * lengths, and says nothing about them.
 */
export async function hasToken(request: Request, tokens: readonly string[]): Promise<boolean> {
  const given = bearer(request);
  if (given === null || tokens.length === 0) return false;
  const [dg, dt] = await Promise.all([digest(given), Promise.all(tokens.map(configuredDigest))]);
  let ok = false;
  for (const d of dt) {
    if (crypto.subtle.timingSafeEqual(dg, d)) ok = true;
  }
  return ok;
}
