// The .deb under a real systemd (test/systemd/run.ts: systemd-nspawn on an overlay of /), as
// `npm run test:systemd` runs it but watching the agent against an unanswering Worker for 20 s
// instead of 2 min (WatchdogSec=5 then, so that the watch spans several pings).
import t from 'tap';
import { systemdSuite } from './run.ts';

const skipped = await systemdSuite({
  ok: (cond, msg, extra) => t.ok(cond, msg, extra ?? {}),
  equal: (found, wanted, msg) => t.equal(found, wanted, msg),
  comment: (msg) => t.comment(msg),
}, { watchSeconds: 20 });
if (skipped) t.test("the .deb under a real systemd", { skip: `skipped: ${skipped}` }, () => {});
