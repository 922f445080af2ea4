// Issue #16: frames fuzzed in both directions. (a) Whatever an agent sends, the real queue object
// keeps answering, closes that connection with 1008 at most, and loses no message: a good agent
// afterwards gets every one delivered. (b) Whatever an object sends, the real agent never crashes,
// closes a bad session with 1008 and reconnects with backoff, never sends a frame the object's
// parser refuses, and never stores bytes that are not what size and SHA-256 announced.
// FUZZ_SEED=n replays a seed.
import t from 'tap';
import { runAgentFrameFuzz } from './agent-frames-run.ts';
import { runObjectFrameFuzz } from './object-frames-run.ts';
import { fuzzSeeds } from './seeds.ts';

for (const seed of fuzzSeeds([1, 2])) {
  t.test(`agent -> object, seed ${seed}: no crash, 1008 at most, nothing lost (FUZZ_SEED=${seed} to replay)`, async (t) => {
    const run = await runObjectFrameFuzz({ seed, rounds: 25 });
    t.comment(run.summary);
    t.same(run.findings, [], `findings for FUZZ_SEED=${seed}`);
  });
  t.test(`object -> agent, seed ${seed}: no crash, 1008 and backoff, valid frames out, only whole messages stored (FUZZ_SEED=${seed} to replay)`, async (t) => {
    const run = await runAgentFrameFuzz({ seed, rounds: 25 });
    t.comment(run.summary);
    t.same(run.findings, [], `findings for FUZZ_SEED=${seed}`);
  });
}
