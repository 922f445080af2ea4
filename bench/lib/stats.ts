// Small statistics helpers: nearest-rank percentiles and run-to-run spread.

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array (p in 0..100). NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] ?? Number.NaN;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.length === 0 ? Number.NaN : s.reduce((a, b) => a + b, 0) / s.length;
  return {
    n: s.length,
    min: s[0] ?? Number.NaN,
    p50: percentile(s, 50),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? Number.NaN,
    mean,
  };
}

export interface Spread { n: number; mean: number; min: number; max: number; cv: number }

/** Mean, range and coefficient of variation (stddev / mean) across runs. */
export function spread(values: readonly number[]): Spread {
  const v = values.filter((x) => Number.isFinite(x));
  const n = v.length;
  const mean = n === 0 ? Number.NaN : v.reduce((a, b) => a + b, 0) / n;
  const sd = n < 2 ? 0 : Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return { n, mean, min: n ? Math.min(...v) : Number.NaN, max: n ? Math.max(...v) : Number.NaN, cv: mean ? sd / mean : Number.NaN };
}

/** Rounds for JSON output (keeps files readable); NaN becomes null. */
export function round(x: number, digits = 2): number | null {
  if (!Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
