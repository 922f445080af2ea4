// One task per key at a time: a task for a key that is still being worked on waits for the
// earlier one, then runs (and finds its outcome in the journal). The object may hand the
// same message, or the same bounce, to a new connection while the old one still works on it.

export class PerKey<T> {
  readonly #running = new Map<string, Promise<T>>();

  /** Tasks running or waiting now. */
  get size(): number {
    return this.#running.size;
  }

  /** Resolves once no task for `key` is running (at once when none is). */
  async idle(key: string): Promise<void> {
    for (let run = this.#running.get(key); run; run = this.#running.get(key)) await run.catch(() => undefined);
  }

  /** Runs `task` once no earlier task for `key` is running; `onWait` when it has to wait. */
  async run(key: string, task: () => Promise<T>, onWait?: () => void): Promise<T> {
    const before = this.#running.get(key);
    const run = (async () => {
      if (before) {
        onWait?.();
        await before.catch(() => undefined);
      }
      return task();
    })();
    this.#running.set(key, run);
    try {
      return await run;
    } finally {
      if (this.#running.get(key) === run) this.#running.delete(key);
    }
  }
}
