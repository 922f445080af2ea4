// systemd's notify protocol for Type=notify and WatchdogSec= (systemd-notify(1), sd_notify(3)):
// READY=1 once the agent runs, STOPPING=1 on SIGTERM (with EXTEND_TIMEOUT_USEC=, below),
// WATCHDOG=1 pings while the event loop turns. The protocol is one datagram on the unix socket
// $NOTIFY_SOCKET, which Node cannot send (node:dgram has no unix sockets, node:net no
// SOCK_DGRAM) without a native addon, so each message runs the systemd-notify tool; the unit
// sets NotifyAccess=all so systemd takes it from that child. Without $NOTIFY_SOCKET (not under
// systemd, or Type=simple) nothing runs at all.
import { execFile } from 'node:child_process';
import type { Logger } from './log.ts';

export interface Notifier {
  ready(): void;
  /**
   * STOPPING=1, and EXTEND_TIMEOUT_USEC= so that systemd's SIGKILL (TimeoutStopSec=) cannot
   * come before the agent's own limit, `exitWithinMs` from now: the stop setting (stopGraceMs)
   * then rules alone and TimeoutStopSec is only a floor.
   */
  stopping(exitWithinMs: number): void;
  /** Stops the watchdog pings. */
  close(): void;
}

const NOTIFY_TIMEOUT_MS = 10_000;
/** Past the agent's own limit: the tool's start and a busy machine, so that the agent's timer fires first. */
const EXTEND_MARGIN_MS = 10_000;
/** A tool killed by a signal not ours is sent again this much later, at most this often. */
const RETRY_MS = 200;
const RETRIES = 3;

export function systemdNotifier(env: NodeJS.ProcessEnv, log: Logger, pid = process.pid): Notifier {
  if (!env.NOTIFY_SOCKET) return { ready() {}, stopping() {}, close() {} };
  let broken = false;
  let pending = 0;
  const send = (...state: string[]): void => attempt(state, 0);
  const attempt = (state: string[], tries: number): void => {
    if (broken) return;
    pending++;
    // One datagram for all: systemd-notify joins its arguments with newlines.
    execFile('systemd-notify', state, { timeout: NOTIFY_TIMEOUT_MS, env: { ...env } }, (err) => {
      pending--;
      if (!err) return;
      // On `systemctl stop` the agent's SIGTERM handler starts the tool for STOPPING=1 while
      // systemd is still signalling the unit's processes: the tool may get the SIGTERM too.
      // systemd signals once, so the same message a moment later gets through.
      if (err.signal && !err.killed && tries < RETRIES) {
        setTimeout(() => attempt(state, tries + 1), RETRY_MS).unref();
        return;
      }
      // Without the tool (or with a socket that refuses) every later message would fail alike.
      broken = (err as NodeJS.ErrnoException).code === 'ENOENT';
      log('notify.failed', { state: state.join(' '), error: err.message, gaveUp: broken });
    });
  };
  // systemd sets WATCHDOG_USEC (and WATCHDOG_PID, our pid) when the unit has WatchdogSec=.
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === pid;
  let timer: NodeJS.Timeout | null = null;
  if (Number.isFinite(usec) && usec > 0 && forUs) {
    // Half the timeout, as sd_watchdog_enabled(3) advises; a ping still running is not doubled.
    timer = setInterval(() => { if (pending === 0) send('WATCHDOG=1'); }, Math.max(1000, usec / 2000));
    timer.unref();
  }
  return {
    ready: () => send('READY=1'),
    stopping: (exitWithinMs) => send('STOPPING=1', `EXTEND_TIMEOUT_USEC=${(exitWithinMs + EXTEND_MARGIN_MS) * 1000}`),
    close: () => { if (timer) clearInterval(timer); },
  };
}
