// The soak's operator: at seeded moments during the faults, what an operator does with
// relayctl (its own AdminClient, relayctl/api.ts): hold, release, delete, dead-letter replay,
// retry and flush, on a message picked at random, in whatever state it is in. Half the picks
// come from the list of messages in the state the action is meant for, half from every message
// accepted so far (mostly delivered and gone, or in another state): a clear refusal (409, 404)
// is the right answer there, and it must change nothing. The books then know what each action
// meant: a message deleted on purpose is the operator's end for it; held ones are released
// before the end; replayed ones must end once like any other.
import { AdminClient, CliError, type State } from '../../relayctl/api.ts';

export type OperatorAction = 'hold' | 'release' | 'delete' | 'replay' | 'retry' | 'flush';
const ACTIONS: readonly OperatorAction[] = ['hold', 'release', 'delete', 'replay', 'retry', 'flush'];
/** The state each action is meant for (flush takes none). */
const MEANT_FOR: Record<Exclude<OperatorAction, 'flush'>, State[]> = {
  hold: ['queued', 'deferred'], release: ['hold'], delete: ['queued', 'deferred', 'hold', 'bouncing'],
  replay: ['dead-letter'], retry: ['deferred'],
};

export interface OperatorCounts {
  /** Per action: done (2xx), refused with a clear error (409 / 404), unreachable (a fault had the Worker down). */
  [action: string]: { done: number; refused: number; unreachable: number };
}

export interface Operator {
  counts: OperatorCounts;
  /** Queue ids the operator deleted (200). */
  deleted: Set<string>;
  /** Queue ids replayed from dead-letter (200), each with the new id the replay queued it under. */
  replayed: Map<string, string>;
  /** Messages the operator released at the end (held until then). */
  releasedAtEnd: number;
  /** What the admin API got wrong: an unclear error, or a refused action that changed the message. */
  problems: string[];
  /** One action now. */
  act(): Promise<void>;
  /** Before the end: releases every held message, as an operator would before leaving. */
  releaseAll(): Promise<void>;
}

/**
 * `ids`: the accepted messages the operator may pick; `spared`: ones it must leave alone even when
 * an admin list offers them (the soak's witnesses: mail from <> must end in dead-letter, which
 * an operator's delete or replay would make a matter of chance).
 */
export function startOperator(o: { url: () => URL; token: string; rnd: () => number; ids: () => string[]; spared: (id: string) => boolean; log: (l: string) => void }): Operator {
  const client = (): AdminClient => new AdminClient({ baseUrl: o.url(), token: o.token });
  const counts: OperatorCounts = Object.fromEntries(ACTIONS.map((a) => [a, { done: 0, refused: 0, unreachable: 0 }]));
  const op: Operator = {
    counts, deleted: new Set(), replayed: new Map(), releasedAtEnd: 0, problems: [],
    act: async () => {
      const action = ACTIONS[Math.floor(o.rnd() * ACTIONS.length)] ?? 'flush';
      const c = client();
      const tally = counts[action] ?? { done: 0, refused: 0, unreachable: 0 };
      try {
        if (action === 'flush') {
          const n = await c.flush();
          tally.done++;
          o.log(`operator: flush (${n} deferred)`);
          return;
        }
        const id = await pick(c, action);
        if (id === null) return;
        const before = await stateOf(c, id);
        try {
          const as = await c[action](id);
          tally.done++;
          if (action === 'delete') op.deleted.add(id);
          if (action === 'replay' && typeof as === 'string') op.replayed.set(id, as);
          o.log(`operator: ${action} ${id} (was ${before ?? 'gone'})${action === 'replay' ? ` as ${String(as)}` : ''}`);
        } catch (err) {
          if (!(err instanceof CliError) || (err.kind !== 'conflict' && err.kind !== 'not-found')) throw err;
          tally.refused++;
          await checkUnchanged(c, action, id, before, err);
        }
      } catch (err) {
        if (err instanceof CliError && err.kind === 'unreachable') { tally.unreachable++; return; }
        // A Worker restarting answers 5xx for a moment; anything else is the API's to answer clearly.
        const text = err instanceof Error ? err.message : String(err);
        if (err instanceof CliError && err.kind === 'server' && /\b50[23]\b|restart|reset/i.test(text)) { tally.unreachable++; return; }
        op.problems.push(`operator ${action}: ${text}`);
      }
    },
    releaseAll: async () => {
      const c = client();
      for (let round = 0; round < 20; round++) {
        const held = await c.list('hold', 500).catch(() => []);
        if (held.length === 0) return;
        for (const m of held) {
          await c.release(m.id).then(() => { op.releasedAtEnd++; }, () => undefined);
        }
      }
    },
  };

  /** A message for `action`: half the time one in the state it is meant for, else any accepted one. */
  async function pick(c: AdminClient, action: Exclude<OperatorAction, 'flush'>): Promise<string | null> {
    if (o.rnd() < 0.5) {
      const states = MEANT_FOR[action];
      const state = states[Math.floor(o.rnd() * states.length)] ?? 'queued';
      const list = (await c.list(state, 50)).filter((m) => !o.spared(m.id));
      const m = list[Math.floor(o.rnd() * list.length)];
      if (m) return m.id;
    }
    const ids = o.ids().filter((id) => !o.spared(id));
    return ids[Math.floor(o.rnd() * ids.length)] ?? null;
  }

  /** A refused action must leave the message as it was: not deleted, not held, not queued by us. */
  async function checkUnchanged(c: AdminClient, action: OperatorAction, id: string, before: State | null, err: CliError): Promise<void> {
    const after = await stateOf(c, id);
    // A delete refused because an agent held the message: its delivery may be acked a moment later,
    // and a delivered message leaves the queue. Had the refused delete removed it after all, the
    // books would find it lost (it is not in `deleted`).
    const held = before === 'in-flight' || (action === 'delete' && /\(in-flight\)/.test(err.message));
    // Only the operator moves a message out of hold or dead-letter: refusing those is wrong too.
    const wrong =
      (err.kind === 'not-found' && after !== null) ? `answered "no such message" for a message in ${after}` :
        (action === 'delete' && before !== null && after === null && !held) ? `refused delete (${err.message}), yet the message is gone` :
          (action === 'hold' && before !== 'hold' && after === 'hold') ? `refused hold (${err.message}), yet the message is held` :
            (action === 'release' && before === 'hold') ? `refused release of a held message (${err.message}); now ${after ?? 'gone'}` :
              (action === 'replay' && before === 'dead-letter') ? `refused replay of a dead-lettered message (${err.message}); now ${after ?? 'gone'}` : null;
    if (wrong !== null) op.problems.push(`operator ${action} ${id}: ${wrong}`);
  }
  return op;
}

async function stateOf(c: AdminClient, id: string): Promise<State | null> {
  try {
    return (await c.show(id)).state;
  } catch (err) {
    if (err instanceof CliError && err.kind === 'not-found') return null;
    throw err;
  }
}

/** The operator's line for the summary: per action done / refused (/ unreachable). */
export function operatorLine(counts: OperatorCounts): string {
  return Object.entries(counts).filter(([, c]) => c.done + c.refused + c.unreachable > 0)
    .map(([a, c]) => `${a} ${c.done}/${c.refused}${c.unreachable > 0 ? `/${c.unreachable}` : ''}`).join(', ') || 'none';
}
