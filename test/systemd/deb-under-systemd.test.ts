// `npm run test:systemd` inside `npm test` (issue #25: CI runs it where it fits the time): the
// .deb installed, refused without a token, run, stopped, upgraded, removed and purged under a
// real systemd booted with nspawn (run.ts). The watch against an unanswering Worker is 20 s here,
// not the 2 min of `npm run test:systemd`, and lintian is left to that run: together they would
// add minutes to every CI run. Where nspawn cannot boot it skips; under CI a missing tool fails.
import t from 'tap';
import { cannotRun, systemdSuite, type Check } from './run.ts';

const why = await cannotRun();
// Under CI a missing tool is not skipped: systemdSuite throws, naming it.
const skip = why === null || (why.missing && process.env.CI) ? false : why.reason;

t.test('the .deb under a real systemd: install, no token, bad setting, watchdog, stop, one message, upgrade, purge', { skip }, async (t) => {
  const check: Check = {
    ok: (cond, msg, extra) => { t.ok(cond, msg, extra ?? {}); },
    equal: (found, wanted, msg) => { t.equal(found, wanted, msg); },
    comment: (msg) => { t.comment(msg); },
  };
  t.equal(await systemdSuite(check, { watchSeconds: 20, lint: false }), null, 'it booted and ran');
});
