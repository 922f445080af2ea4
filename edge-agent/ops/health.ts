// Whether the LMTP target answered recently. Deliveries report what they saw;
// when none did for a while, a probe (probe.ts) asks. The last observation
// wins, so a target that just refused a connection is unhealthy at once, not
// only after the freshness window runs out.

export interface TargetStatus {
  /** The last observation (delivery or probe) found the target answering. */
  ok: boolean;
  /** When it last answered (ms since the epoch), or null. */
  lastOkAt: number | null;
  /** Why the last observation failed, or null. */
  error: string | null;
}

export interface TargetWatchOptions {
  /** Probe when nothing was observed for this long. */
  probeEveryMs: number;
  /** The target counts as up only if it answered within this window. */
  freshMs: number;
  now?: () => number;
}

export class TargetWatch {
  readonly #probe: () => Promise<void>;
  readonly #o: Required<TargetWatchOptions>;
  #lastAt = Number.NEGATIVE_INFINITY;
  #ok = false;
  #lastOkAt: number | null = null;
  #error: string | null = 'not contacted yet';
  #probing: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** Called after each probe, for metrics. */
  onProbe: (ok: boolean) => void = () => {};
  /** Called when an observation differs from the one before (and for the first), for the log. */
  onChange: (ok: boolean, error: string | null) => void = () => {};
  #known = false;

  constructor(probe: () => Promise<void>, o: TargetWatchOptions) {
    this.#probe = probe;
    this.#o = { now: Date.now, ...o };
  }

  /** A delivery's observation: the target replied (ok), or could not be reached (error). */
  seen(ok: boolean, error: string | null = null): void {
    const now = this.#o.now();
    const changed = !this.#known || ok !== this.#ok;
    this.#known = true;
    this.#lastAt = now;
    this.#ok = ok;
    this.#error = ok ? null : (error ?? 'no reply');
    if (ok) this.#lastOkAt = now;
    if (changed) this.onChange(ok, this.#error);
  }

  /** Probes now (unless a probe is running) and resolves when it is done. */
  probe(): Promise<void> {
    this.#probing ??= this.#probe().then(
      () => { this.seen(true); this.onProbe(true); },
      (err: unknown) => { this.seen(false, err instanceof Error ? err.message : String(err)); this.onProbe(false); },
    ).finally(() => { this.#probing = null; });
    return this.#probing;
  }

  start(): void {
    void this.probe();
    // Checks often, probes only when no delivery spoke to the target for probeEveryMs.
    const tick = Math.max(50, Math.min(this.#o.probeEveryMs, 5_000));
    this.#timer = setInterval(() => {
      if (this.#o.now() - this.#lastAt >= this.#o.probeEveryMs) void this.probe();
    }, tick);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  status(): TargetStatus {
    return { ok: this.up(), lastOkAt: this.#lastOkAt, error: this.#error };
  }

  up(): boolean {
    return this.#ok && this.#lastOkAt !== null && this.#o.now() - this.#lastOkAt <= this.#o.freshMs;
  }
}
