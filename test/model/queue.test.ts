// Issue #22: the queue agrees with its model (test/model/model.ts) over random sequences of
// ingests, agents and their answers, operator actions, clock moves and restarts, on the real
// RelayQueue in workerd with R2. A bounded budget here; `npm run fuzz -- --model` runs long.
// A failure prints its seed, path and shrunk sequence, and the command that replays it:
//   MODEL_SEED=… MODEL_PATH=… npm test -- test/model/queue.test.ts
import t from 'tap';
import { runModel, stats, timing } from './run.ts';
import { closeMs } from './real.ts';

const seed = process.env.MODEL_SEED === undefined ? undefined : Number(process.env.MODEL_SEED);
const path = process.env.MODEL_PATH;
const replayPath = process.env.MODEL_REPLAY;
const budgetMs = Number(process.env.MODEL_BUDGET_MS ?? 50_000);

t.test('the queue does what its model says, in every sequence tried', async (t) => {
  const r = await runModel({
    ...(seed === undefined ? {} : { seed }), ...(path === undefined ? {} : { path }), ...(replayPath === undefined ? {} : { replayPath }),
    numRuns: path === undefined ? 5_000 : 1, maxCommands: 30,
    ...(path === undefined ? { timeLimitMs: budgetMs } : {}),
  });
  t.comment(`${r.runs} sequences in ${r.seconds.toFixed(1)} s (${(r.runs / r.seconds).toFixed(2)}/s), seed ${r.seed}`);
  t.comment([...stats].sort().map(([k, n]) => `${String(n).padStart(6)}  ${k}`).join('\n'));
  t.comment(`ms by command: ${[...timing].sort((a, b) => b[1] - a[1]).map(([k, ms]) => `${k} ${ms.toFixed(0)}`).join(', ')}`);
  t.comment(`ws close handshakes: ${closeMs.toFixed(0)} ms`);
  if (!r.ok) t.comment(r.message);
  t.ok(r.ok, r.message.split('\n')[0] ?? '');
  if (path === undefined) t.ok(r.runs >= 3, 'the budget ran several sequences');
});
