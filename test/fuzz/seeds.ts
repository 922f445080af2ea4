// What shapes a fuzz run, and the command that replays one exactly. The seed alone does not:
// the path fuzzer draws each message from one generator, so 40 messages and 200 are other
// sequences; rounds do the same for the frame fuzzers. npm test runs fixed seeds at a small
// size; npm run fuzz (main.ts) prints, with each finding, every parameter of its run as
// environment variables that the tap tests (path.test.ts, frames.test.ts) read back.

/** One of the fuzzers; frames.test.ts holds the two frame fuzzers, FUZZ_MODE picks one. */
export type FuzzMode = 'path' | 'agent->object' | 'object->agent';
export const MODES: readonly FuzzMode[] = ['path', 'agent->object', 'object->agent'];

export interface FuzzParams {
  seeds: number[];
  /** Messages the path fuzzer posts. */
  messages: number;
  /** Rounds (connections) of each frame fuzzer. */
  rounds: number;
  /** How long the path fuzzer waits for the queue to settle (ms). */
  settleMs: number;
  /** Only this fuzzer; all of the file's when null. */
  mode: FuzzMode | null;
}

/** What npm test runs when nothing is set. */
export const TAP_DEFAULTS = { seeds: [1, 2], messages: 40, rounds: 25, settleMs: 40_000 } as const;

function int(name: string, env: NodeJS.ProcessEnv, fallback: number): number {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, not ${JSON.stringify(v)}`);
  return n;
}

/** The run the tap tests make: npm test's defaults, or a replay's FUZZ_* variables. */
export function fuzzParams(env: NodeJS.ProcessEnv = process.env): FuzzParams {
  const mode = env.FUZZ_MODE ?? '';
  if (mode !== '' && !MODES.includes(mode as FuzzMode)) throw new Error(`FUZZ_MODE must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`);
  const seed = env.FUZZ_SEED;
  return {
    seeds: seed === undefined || seed === '' ? [...TAP_DEFAULTS.seeds] : [int('FUZZ_SEED', env, 0)],
    messages: int('FUZZ_MESSAGES', env, TAP_DEFAULTS.messages),
    rounds: int('FUZZ_ROUNDS', env, TAP_DEFAULTS.rounds),
    settleMs: int('FUZZ_SETTLE_MS', env, TAP_DEFAULTS.settleMs),
    mode: mode === '' ? null : (mode as FuzzMode),
  };
}

/** Whether a tap test of this mode runs under these parameters. */
export const runs = (p: FuzzParams, mode: FuzzMode): boolean => p.mode === null || p.mode === mode;

/** The command that replays one run exactly: every parameter that shapes it, set explicitly. */
export function replayCommand(mode: FuzzMode, seed: number, p: Omit<FuzzParams, 'seeds' | 'mode'>): string {
  const size = mode === 'path' ? `FUZZ_MESSAGES=${p.messages} FUZZ_SETTLE_MS=${p.settleMs}` : `FUZZ_ROUNDS=${p.rounds}`;
  const file = mode === 'path' ? 'path' : 'frames';
  return `FUZZ_SEED=${seed} ${size} FUZZ_MODE='${mode}' npm test -- test/fuzz/${file}.test.ts`;
}

/** A tap timeout that fits the run's size (the file's default of 300 s fits npm test's). */
export const tapTimeout = (mode: FuzzMode, p: FuzzParams): number =>
  mode === 'path' ? 60_000 + p.settleMs + p.messages * 1_000 : 60_000 + p.rounds * 3_000;
