// Runs a program this process has just written. While one of our writes is open, any spawn of ours
// forks a child that holds the file open for writing until it execs; exec of the file then fails
// with ETXTBSY for that moment (the same race as Go's issue 22315). test/systemd builds two
// packages at once and met it in CI. The remedy is the one Go took: try again shortly.
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export async function runWritten(
  file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; tries?: number; waitMs?: number } = {},
): Promise<{ stdout: string; stderr: string }> {
  const { tries = 40, waitMs = 50, env } = opts;
  for (let i = 1; ; i++) {
    try {
      return await execFileAsync(file, args, { env });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ETXTBSY' || i >= tries) throw err;
      await sleep(waitMs);
    }
  }
}
