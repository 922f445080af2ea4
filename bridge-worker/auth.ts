// Bearer-token checks. Tokens come only from the Authorization header (never a
// query string, which ends up in logs) and are compared in constant time.

const encoder = new TextEncoder();

function bearer(request: Request): string | null {
  const h = request.headers.get('Authorization');
  if (h === null) return null;
  const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(h);
  return m?.[1] ?? null;
}

/** Constant-time equality; lengths are hashed first so they leak nothing either. */
async function tokenEquals(a: string, b: string): Promise<boolean> {
  const [da, db] = await Promise.all([
    crypto.subtle.digest('SHA-256', encoder.encode(a)),
    crypto.subtle.digest('SHA-256', encoder.encode(b)),
  ]);
  return crypto.subtle.timingSafeEqual(da, db);
}

/** True when the request carries one of `tokens`; every token is compared, match or not. */
export async function hasToken(request: Request, tokens: readonly string[]): Promise<boolean> {
  const given = bearer(request);
  if (given === null || tokens.length === 0) return false;
  let ok = false;
  for (const t of tokens) {
    if (await tokenEquals(given, t)) ok = true;
  }
  return ok;
}
