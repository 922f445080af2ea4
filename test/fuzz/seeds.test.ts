// Issue #22: the command printed with a finding replays exactly that run. Read back by the tap
// tests, its variables give the seed, size and fuzzer that npm run fuzz used, not npm test's.
import t from 'tap';
import { fuzzParams, MODES, replayCommand, runs, TAP_DEFAULTS } from './seeds.ts';

/** The variables a command sets, as the shell would pass them. */
function envOf(cmd: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const m of cmd.matchAll(/(FUZZ_[A-Z_]+)=('[^']*'|\S+)/g)) env[m[1] as string] = (m[2] as string).replace(/^'|'$/g, '');
  return env;
}

t.test('a printed command gives back every parameter of the run it came from', async (t) => {
  const run = { messages: 200, rounds: 100, settleMs: 120_000 };
  for (const mode of MODES) {
    const cmd = replayCommand(mode, 3, run);
    const p = fuzzParams(envOf(cmd));
    t.same(p.seeds, [3], `${mode}: the seed`);
    t.equal(p.mode, mode, `${mode}: only that fuzzer`);
    t.ok(runs(p, mode) && MODES.filter((m) => runs(p, m)).length === 1, `${mode}: runs alone`);
    if (mode === 'path') t.same([p.messages, p.settleMs], [200, 120_000], 'path: messages and settle time');
    else t.equal(p.rounds, 100, `${mode}: rounds`);
    t.match(cmd, mode === 'path' ? /test\/fuzz\/path\.test\.ts$/ : /test\/fuzz\/frames\.test\.ts$/);
  }
});

t.test('without variables, npm test\'s fixed seeds and sizes; bad values are refused', async (t) => {
  t.same(fuzzParams({}), { ...TAP_DEFAULTS, seeds: [...TAP_DEFAULTS.seeds], mode: null });
  t.throws(() => fuzzParams({ FUZZ_MESSAGES: '-1' }), /FUZZ_MESSAGES/);
  t.throws(() => fuzzParams({ FUZZ_MODE: 'paths' }), /FUZZ_MODE/);
});
