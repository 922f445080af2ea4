// `npm run fuzz [-- --seeds N --first S --messages M --rounds R --settle-ms T --mode path|agent->object|object->agent]`:
// the fuzzers of test/fuzz/ run long, over many seeds and more messages. One summary line per
// seed and fuzzer; exits 1 on any finding, each printed with the command that replays exactly
// that run (seed, size and fuzzer; seeds.ts).
// `npm run fuzz -- --model [--sequences N --first SEED]`: only the queue's model-based test
// (test/model/), N sequences from SEED; a finding prints the command that replays it exactly.
import { parseArgs } from 'node:util';
import { runAgentFrameFuzz } from './agent-frames-run.ts';
import { runObjectFrameFuzz } from './object-frames-run.ts';
import { runPathFuzz, type PathRun } from './path-run.ts';
import { MODES, replayCommand, type FuzzMode } from './seeds.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '10' },
    first: { type: 'string', default: String(Date.now() % 100_000) },
    messages: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '100' },
    'settle-ms': { type: 'string', default: '120000' },
    mode: { type: 'string' },
    // --model: the model-based test of the queue (test/model/), --sequences of it, nothing else.
    model: { type: 'boolean', default: false },
    sequences: { type: 'string', default: '10000' },
  },
});
const num = (k: 'seeds' | 'first' | 'messages' | 'rounds' | 'settle-ms' | 'sequences'): number => {
  const n = Number(values[k]);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`fuzz: --${k} must be a non-negative integer\n`);
    process.exit(2);
  }
  return n;
};
if (values.model) {
  const { runModel } = await import('../model/run.ts');
  const seed = Number(values.first);
  const r = await runModel({
    seed, numRuns: num('sequences'), maxCommands: 30,
    log: (line) => process.stdout.write(`${new Date().toISOString()} model ${line}\n`),
  });
  process.stdout.write(`${new Date().toISOString()} model ${r.runs} sequences in ${r.seconds.toFixed(0)} s (${(r.runs / r.seconds).toFixed(2)}/s), seed ${seed}\n`);
  if (!r.ok) process.stdout.write(`  FINDING ${r.message}\n`);
  process.stdout.write(`${r.ok ? 0 : 1} findings\n`);
  process.exit(r.ok ? 0 : 1);
}
const mode = values.mode;
if (mode !== undefined && !MODES.includes(mode as FuzzMode)) {
  process.stderr.write(`fuzz: --mode must be one of ${MODES.join(', ')}\n`);
  process.exit(2);
}
const p = { messages: num('messages'), rounds: num('rounds'), settleMs: num('settle-ms') };
const fuzzers: [FuzzMode, (seed: number) => Promise<PathRun>][] = [
  ['path', (seed) => runPathFuzz({ seed, messages: p.messages, settleMs: p.settleMs })],
  ['agent->object', (seed) => runObjectFrameFuzz({ seed, rounds: p.rounds })],
  ['object->agent', (seed) => runAgentFrameFuzz({ seed, rounds: p.rounds })],
];
let found = 0;
for (let seed = num('first'); seed < num('first') + num('seeds'); seed++) {
  for (const [name, run] of fuzzers) {
    if (mode !== undefined && mode !== name) continue;
    const r = await run(seed);
    process.stdout.write(`${new Date().toISOString()} ${name.padEnd(14)} ${r.summary}\n`);
    for (const f of r.findings) process.stdout.write(`  FINDING (${replayCommand(name, seed, p)}): ${f}\n`);
    found += r.findings.length;
  }
}
process.stdout.write(`${found} findings\n`);
process.exit(found === 0 ? 0 : 1);
