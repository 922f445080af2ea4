// Random and mutated frames for the frame fuzzers (frames.test.ts): a valid frame with one or
// two fields broken (deleted, of the wrong type, too long, out of range, an extra one), its
// JSON cut short, random bytes, huge texts. Each draw comes from the caller's seeded PRNG.
type Rand = () => number;
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

/** A value of the wrong kind, or of the right kind but out of bounds. */
export function oddValue(r: Rand): Json {
  return pick<() => Json>(r, [
    () => null, () => true, () => -1, () => 0, () => 1.5, () => 2 ** 53 + 2, () => -(2 ** 31), () => '',
    () => 'x'.repeat(1 + Math.floor(r() * 70_000)), () => '\u0000\r\n<>', () => [], () => [1, 'a', null],
    () => ({}), () => ({ nested: { deeper: [] } }), () => 'f'.repeat(32), () => '0'.repeat(64), () => '\ud800',
  ])();
}

/** `frame` with one to three of its fields broken, or an extra one. */
export function mutateFrame(r: Rand, frame: Record<string, Json>): Record<string, Json> {
  const out: Record<string, Json> = { ...frame };
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) {
    const keys = Object.keys(out);
    const k = pick(r, keys);
    const op = r();
    if (op < 0.25) delete out[k];
    else if (op < 0.8) out[k] = oddValue(r);
    else if (op < 0.9) out[`extra${i}`] = oddValue(r);
    else out.type = pick(r, ['hello', 'credit', 'ack', 'nack', 'recipients', 'retry', 'bounced', 'welcome', 'message', 'end', 'bounce', 'HELLO', '']);
  }
  return out;
}

/** Random bytes, as a string (lone surrogates and control characters included). */
export function noise(r: Rand, max = 200): string {
  const n = Math.floor(r() * max);
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(Math.floor(r() * 0x10000));
  return s;
}

export function randomBytes(r: Rand, max = 3000): Buffer {
  const b = Buffer.alloc(Math.floor(r() * max));
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** A text frame: mutated JSON of `frame`, its JSON cut short, noise, or a huge text. */
export function garbleText(r: Rand, frame: Record<string, Json>): string {
  const x = r();
  if (x < 0.6) return JSON.stringify(mutateFrame(r, frame));
  if (x < 0.75) {
    const s = JSON.stringify(frame);
    return s.slice(0, Math.floor(r() * s.length));
  }
  if (x < 0.9) return noise(r);
  // Over the 64 KiB control-frame limit, with or without valid JSON around it.
  return r() < 0.5 ? JSON.stringify({ ...frame, pad: 'p'.repeat(70_000) }) : 'z'.repeat(70_000 + Math.floor(r() * 200_000));
}
