// Issue #16: frames fuzzed in both directions. (a) Whatever an agent sends, the real queue object
// keeps answering, closes that connection with 1008 at most, and loses no message: a good agent
// afterwards gets every one delivered. (b) Whatever an object sends, the real agent never crashes,
// closes a bad session with 1008 and reconnects with backoff, never sends a frame the object's
// parser refuses, and never stores bytes that are not what size and SHA-256 announced.
// The FUZZ_* variables of a finding's command (seeds.ts) replay that run exactly.
import t from 'tap';
import { runAgentFrameFuzz } from './agent-frames-run.ts';
import { runObjectFrameFuzz } from './object-frames-run.ts';
import { fuzzParams, replayCommand, runs, tapTimeout } from './seeds.ts';

const p = fuzzParams();
for (const seed of p.seeds) {
  if (runs(p, 'agent->object')) {
    const replay = replayCommand('agent->object', seed, p);
    t.test(`agent -> object, seed ${seed}: no crash, 1008 at most, nothing lost (${replay})`, { timeout: tapTimeout('agent->object', p) }, async (t) => {
      const run = await runObjectFrameFuzz({ seed, rounds: p.rounds });
      t.comment(run.summary);
      t.same(run.findings, [], `findings; replay: ${replay}`);
    });
  }
  if (runs(p, 'object->agent')) {
    const replay = replayCommand('object->agent', seed, p);
    t.test(`object -> agent, seed ${seed}: no crash, 1008 and backoff, valid frames out, only whole messages stored (${replay})`, { timeout: tapTimeout('object->agent', p) }, async (t) => {
      const run = await runAgentFrameFuzz({ seed, rounds: p.rounds });
      t.comment(run.summary);
      t.same(run.findings, [], `findings; replay: ${replay}`);
    });
  }
}
