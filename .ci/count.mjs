// Reads TAP 14 from stdin and prints "N passed, N failed" over leaf test points
// (a subtest's own closing line is not counted again). Skips count as passed
// only when tap reported them ok; they are also listed separately. The failed
// points are named just above the last line: CI shows only the tail of the log.
import { createInterface } from 'node:readline';

let passed = 0, failed = 0, skipped = 0;
const parentAt = new Set(); // indents whose next point closes a subtest
const names = []; // [indent, subtest name] of the subtests we are inside
const failures = [];
const where = (indent, point) =>
  [...names.filter(([i]) => i < indent).map(([, n]) => n), point].join(' > ');
for await (const line of createInterface({ input: process.stdin })) {
  const sub = /^(\s*)# Subtest(?:: (.*))?/.exec(line);
  if (sub) {
    const indent = sub[1].length;
    while (names.length && names[names.length - 1][0] >= indent) names.pop();
    names.push([indent, sub[2] ?? '']);
    parentAt.add(indent);
    continue;
  }
  const m = /^(\s*)(not ok|ok) \d+( - (.*))?/.exec(line);
  if (!m) continue;
  const indent = m[1].length;
  const point = m[4] ?? '';
  if (parentAt.has(indent)) {
    parentAt.delete(indent);
    while (names.length && names[names.length - 1][0] >= indent) names.pop();
    if (m[2] === 'ok') continue;
    if (!/# (SKIP|TODO)/i.test(line)) failed++;
    continue;
  }
  if (/# SKIP/i.test(line)) { skipped++; continue; }
  if (m[2] === 'ok' || /# TODO/i.test(line)) passed++;
  else { failed++; failures.push(where(indent, point)); }
}
if (skipped) console.log(`(${skipped} skipped)`);
for (const f of failures.slice(0, 20)) console.log(`failed: ${f}`);
if (failures.length > 20) console.log(`failed: … and ${failures.length - 20} more`);
// CI reads this exact last line.
console.log(`${passed} passed, ${failed} failed`);
