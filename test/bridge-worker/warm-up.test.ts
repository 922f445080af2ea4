// warm-up.ts runs each message's pure code at startup so that a fresh isolate's first message
// does not pay for compiling it (issue #15). It only helps if its sample takes the same paths
// a real message does: a block Cloudflare wrote, a header section, verdicts found in the block.
import t from 'tap';
import { SAMPLE, warmUp } from '../../bridge-worker/warm-up.ts';

t.test('the warm-up message is parsed the whole way, as a delivery from Email Routing is', async (t) => {
  const w = warmUp();
  const text = new TextDecoder('latin1').decode(SAMPLE);
  t.equal(w.block, text.indexOf('From: '), 'the whole block is recognised as Cloudflare\'s');
  t.equal(w.header, text.indexOf('\r\n\r\n') + 2 - w.block, 'the sender\'s header section ends at the blank line');
  t.equal(w.dkim, 'pass', 'the verdicts are read from the block');
  t.equal(w.shard, 0);
});
