// The Prometheus text exposition format (version 0.0.4), just what the agent
// needs: counters with at most one label, gauges read at scrape time, samples
// read from elsewhere (the queue's numbers, the process's), and one histogram.
// A dependency (prom-client) would be larger than this file.

interface Metric {
  lines(): string[];
}

const escHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escLabel = (s: string): string => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const num = (n: number): string => (n === Number.POSITIVE_INFINITY ? '+Inf' : Number.isFinite(n) ? String(n) : 'NaN');

function head(name: string, help: string, type: string): string[] {
  return [`# HELP ${name} ${escHelp(help)}`, `# TYPE ${name} ${type}`];
}

export class Counter implements Metric {
  readonly #name: string;
  readonly #help: string;
  readonly #label: string | null;
  readonly #values = new Map<string, number>();

  /** `label` with its known values: each is exported from the start (at 0), so rates work. */
  constructor(name: string, help: string, label?: { name: string; values: readonly string[] }) {
    this.#name = name;
    this.#help = help;
    this.#label = label?.name ?? null;
    for (const v of label?.values ?? ['']) this.#values.set(v, 0);
  }

  inc(labelValue = '', by = 1): void {
    this.#values.set(labelValue, (this.#values.get(labelValue) ?? 0) + by);
  }

  get(labelValue = ''): number {
    return this.#values.get(labelValue) ?? 0;
  }

  lines(): string[] {
    const out = head(this.#name, this.#help, 'counter');
    for (const [v, n] of this.#values) {
      out.push(this.#label === null ? `${this.#name} ${num(n)}` : `${this.#name}{${this.#label}="${escLabel(v)}"} ${num(n)}`);
    }
    return out;
  }
}

export class Gauge implements Metric {
  readonly #name: string;
  readonly #help: string;
  readonly #read: () => number;

  /** Read when scraped, so it never goes stale. */
  constructor(name: string, help: string, read: () => number) {
    this.#name = name;
    this.#help = help;
    this.#read = read;
  }

  lines(): string[] {
    return [...head(this.#name, this.#help, 'gauge'), `${this.#name} ${num(this.#read())}`];
  }
}

/**
 * Values read when scraped from a source this process does not own (the queue object's
 * counts, the kernel's CPU time): a gauge or a counter, with at most one label. `read`
 * returns one value, a value per label value, or null for "unknown now" (no sample line).
 */
export class Sampled implements Metric {
  readonly #name: string;
  readonly #help: string;
  readonly #type: 'gauge' | 'counter';
  readonly #label: string | null;
  readonly #read: () => number | ReadonlyMap<string, number> | null;

  constructor(name: string, help: string, type: 'gauge' | 'counter', label: string | null, read: () => number | ReadonlyMap<string, number> | null) {
    this.#name = name;
    this.#help = help;
    this.#type = type;
    this.#label = label;
    this.#read = read;
  }

  lines(): string[] {
    const out = head(this.#name, this.#help, this.#type);
    const v = this.#read();
    if (typeof v === 'number') out.push(`${this.#name} ${num(v)}`);
    else if (v !== null) for (const [k, n] of v) out.push(`${this.#name}{${this.#label ?? 'label'}="${escLabel(k)}"} ${num(n)}`);
    return out;
  }
}

export class Histogram implements Metric {
  readonly #name: string;
  readonly #help: string;
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.#name = name;
    this.#help = help;
    this.#bounds = [...bounds].sort((a, b) => a - b);
    this.#counts = this.#bounds.map(() => 0);
  }

  observe(v: number): void {
    this.#sum += v;
    this.#count++;
    const i = this.#bounds.findIndex((b) => v <= b);
    if (i >= 0) this.#counts[i] = (this.#counts[i] ?? 0) + 1;
  }

  get count(): number {
    return this.#count;
  }

  lines(): string[] {
    const out = head(this.#name, this.#help, 'histogram');
    let cumulative = 0;
    this.#bounds.forEach((b, i) => {
      cumulative += this.#counts[i] ?? 0;
      out.push(`${this.#name}_bucket{le="${num(b)}"} ${cumulative}`);
    });
    out.push(`${this.#name}_bucket{le="+Inf"} ${this.#count}`, `${this.#name}_sum ${num(this.#sum)}`, `${this.#name}_count ${this.#count}`);
    return out;
  }
}

export class Registry {
  readonly #metrics: Metric[] = [];

  add<M extends Metric>(m: M): M {
    this.#metrics.push(m);
    return m;
  }

  /** The whole exposition, Content-Type `text/plain; version=0.0.4`. */
  render(): string {
    return this.#metrics.flatMap((m) => m.lines()).join('\n') + '\n';
  }
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
