// Issue #16: whatever a delivery target answers (legal but odd replies, drops at every step,
// slow bytes, 4xx/5xx mixes), no message is lost or silently doubled, each ends delivered once
// or in dead-letter with its failure, and the relay then goes quiet. FUZZ_SEED=n replays a seed.
import t from 'tap';
import { runPathFuzz } from './path-run.ts';
import { fuzzSeeds } from './seeds.ts';

for (const seed of fuzzSeeds([1, 2])) {
  t.test(`seed ${seed}: no message lost, doubled or stuck; then idle (FUZZ_SEED=${seed} to replay)`, async (t) => {
    const run = await runPathFuzz({ seed, messages: 40 });
    t.comment(run.summary);
    t.same(run.findings, [], `findings for FUZZ_SEED=${seed}`);
  });
}
