// Issue #16: whatever a delivery target answers (legal but odd replies, drops at every step,
// slow bytes, 4xx/5xx mixes), no message is lost or silently doubled, each ends delivered once
// or in dead-letter with its failure, and the relay then goes quiet. The FUZZ_* variables of a
// finding's command (seeds.ts) replay that run exactly.
import t from 'tap';
import { runPathFuzz } from './path-run.ts';
import { fuzzParams, replayCommand, runs, tapTimeout } from './seeds.ts';

const p = fuzzParams();
if (runs(p, 'path')) {
  for (const seed of p.seeds) {
    const replay = replayCommand('path', seed, p);
    t.test(`seed ${seed}: no message lost, doubled or stuck; then idle (${replay})`, { timeout: tapTimeout('path', p) }, async (t) => {
      const run = await runPathFuzz({ seed, messages: p.messages, settleMs: p.settleMs });
      t.comment(run.summary);
      t.same(run.findings, [], `findings; replay: ${replay}`);
    });
  }
}
