// Reads TAP 14 from stdin and prints "N passed, N failed" over leaf test points
// (a subtest's own closing line is not counted again). Skips count as passed
// only when tap reported them ok; they are also listed separately.
import { createInterface } from 'node:readline';

let passed = 0, failed = 0, skipped = 0;
const parentAt = new Set(); // indents whose next point closes a subtest
for await (const line of createInterface({ input: process.stdin })) {
  const sub = /^(\s*)# Subtest/.exec(line);
  if (sub) { parentAt.add(sub[1].length); continue; }
  const m = /^(\s*)(not ok|ok) \d+/.exec(line);
  if (!m) continue;
  const indent = m[1].length;
  if (parentAt.has(indent)) { parentAt.delete(indent); if (m[2] === 'ok') continue; if (!/# (SKIP|TODO)/i.test(line)) { failed++; } continue; }
  if (/# SKIP/i.test(line)) { skipped++; continue; }
  if (m[2] === 'ok' || /# TODO/i.test(line)) passed++; else failed++;
}
if (skipped) console.log(`(${skipped} skipped)`);
// CI reads this exact last line.
console.log(`${passed} passed, ${failed} failed`);
