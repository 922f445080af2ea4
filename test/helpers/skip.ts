// Tests that need a tool from outside npm (Dovecot, smtp-sink, systemd, python3, perf, tracefs)
// may skip on a developer's machine that lacks it, saying why. Under CI (.ci/run installs them
// all) a missing tool is an error, never a silent skip: a test that never runs proves nothing.
import { dovecotAvailable } from '../../bench/lib/dovecot.ts';

/** For `t.test(name, { skip: ciSkip('Dovecot', why) }, ...)`; `why` null or false: the tool is there. */
export function ciSkip(what: string, why: string | null | false): string | false {
  if (!why) return false;
  if (process.env.CI) throw new Error(`CI must run the ${what} tests: ${why}`);
  return `${what} not available: ${why}`;
}

/**
 * For `t.test(name, { skip: dovecotSkip() }, ...)`: a reason to skip on a developer's
 * machine without Dovecot (bench/lib/dovecot.ts); under CI a missing Dovecot is an error.
 */
export function dovecotSkip(): string | false {
  const a = dovecotAvailable();
  return ciSkip('Dovecot', a.ok ? false : a.reason);
}
