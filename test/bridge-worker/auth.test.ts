// hasToken() in Node, with the one Workers-only call (crypto.subtle.timingSafeEqual) stood in
// for: configured tokens are digested once per isolate, the presented one on every request,
// and every configured token is compared, match or not.
import t from 'tap';
import { timingSafeEqual } from 'node:crypto';

type HasToken = (request: Request, tokens: readonly string[]) => Promise<boolean>;

/** What auth.ts uses of crypto.subtle. */
interface Subtle {
  digest(alg: string, data: Uint8Array): Promise<ArrayBuffer>;
  timingSafeEqual?(a: ArrayBuffer, b: ArrayBuffer): boolean;
}
const subtle = crypto.subtle as unknown as Subtle;
const realDigest = subtle.digest.bind(subtle);
let digests: string[] = [];
let compares = 0;
subtle.digest = (alg, data) => {
  digests.push(Buffer.from(data).toString());
  return realDigest(alg, data);
};
subtle.timingSafeEqual = (a, b) => {
  compares++;
  return timingSafeEqual(new Uint8Array(a), new Uint8Array(b));
};

// auth.ts is typed against @cloudflare/workers-types (timingSafeEqual), not Node's: loaded untyped.
const spec = '../../bridge-worker/auth.ts';
const { hasToken } = (await import(spec)) as { hasToken: HasToken };

const req = (token: string | null): Request =>
  new Request('http://x/agent', token === null ? {} : { headers: { Authorization: `Bearer ${token}` } });
const A = 'token-a-0123456789abcdef';
const B = 'token-b-0123456789abcdef';

t.test('configured tokens are digested once; the presented one every time', async (t) => {
  digests = [];
  t.equal(await hasToken(req(B), [A, B]), true);
  t.same(digests.sort(), [A, B, B].sort(), 'first request: the given token and each configured one');
  for (const [given, want] of [[A, true], [B, true], ['wrong-token-0123456789', false], ['short', false]] as const) {
    digests = [];
    compares = 0;
    t.equal(await hasToken(req(given), [A, B]), want, `${given}: ${want}`);
    t.same(digests, [given], 'only the presented token is digested');
    t.equal(compares, 2, 'both configured tokens compared, whichever matched');
  }
  digests = [];
  t.equal(await hasToken(req(A), ['token-c-0123456789abcdef']), false);
  t.same(digests.sort(), [A, 'token-c-0123456789abcdef'].sort(), 'a new configured token (a rotated secret) gets its own digest');
});

t.test('no or malformed bearer, or no tokens: false without digesting', async (t) => {
  digests = [];
  t.equal(await hasToken(req(null), [A]), false);
  t.equal(await hasToken(new Request('http://x/', { headers: { Authorization: `Basic ${A}` } }), [A]), false);
  t.equal(await hasToken(req(A), []), false);
  t.same(digests, []);
});
