// Seeds of the fuzz tests: a fixed few for npm test, or the one in FUZZ_SEED to replay a finding.
export function fuzzSeeds(fixed: number[]): number[] {
  const env = process.env.FUZZ_SEED;
  if (env === undefined || env === '') return fixed;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 0) throw new Error(`FUZZ_SEED must be a non-negative integer, not ${JSON.stringify(env)}`);
  return [n];
}
