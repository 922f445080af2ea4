// relayctl's commands: the queue of a mailbridge Worker, seen and steered over its
// admin API (docs/operations.md, "relayctl"), like mailq/postqueue/postsuper for Postfix.
// main.ts runs this with the process's argv, environment and streams; tests may too.
// Exit codes: 0 done, 1 an error (unreachable, bad token, unknown id, wrong state,
// bad URL or answer), 2 a usage error. Errors go to stderr, results to stdout.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { isMessageId } from '../protocol/wire.ts';
import { AdminClient, CliError, MAX_LIST, STATES, type State } from './api.ts';
import { resolveConfig } from './config.ts';
import { formatMessage, formatQueue, formatStatus } from './format.ts';
import { decodeHeaders } from './headers.ts';

const USAGE = `usage: relayctl [options] <command>

commands:
  status                      agents connected, messages and bytes by state, oldest owed message, storage use
  queue [--state S] [--limit N]
                              the queue, oldest first, like mailq (default: every state
                              but incoming, 100; at most 500)
  show <id>                   one message: envelope, attempts, replies, decoded header fields
  retry <id> | --all          a deferred message (--all: every deferred one) is tried now
  flush                       every deferred message is tried now (postqueue -f)
  hold <id>                   a queued or deferred message is put aside (postsuper -h)
  release <id>                a held message goes back to the queue (postsuper -H)
  delete <id>                 deletes a message from the live queue, unless an agent
                              has it now (in-flight, or its bounce being sent) (postsuper -d)
  dead-letter list [--limit N]
                              the dead-lettered messages, oldest first
  dead-letter replay <id>     a dead-lettered message goes back to the queue, fresh retry clock
  dead-letter purge <id>      deletes a dead-lettered (or bounced) message for good
  export <id>                 the stored message, byte for byte, to stdout

options:
  --url <url>                 the Worker's base URL (or RELAYCTL_URL)
  --token-file <file>         file holding ADMIN_TOKEN (or RELAYCTL_TOKEN, RELAYCTL_TOKEN_FILE)
                              neither set: the local relay's, from ./data/admin.json (DATA_DIR)
  --json                      machine-readable output
  -h, --help                  this text

states: ${STATES.join(', ')}
exit codes: 0 ok, 1 error, 2 usage error
`;

/** Options each command takes, besides --url, --token-file, --json, --help. */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  status: [], queue: ['state', 'limit'], show: [], retry: ['all'], 'dead-letter': ['limit'], export: [], help: [],
  flush: [], hold: [], release: [], delete: [],
};

const usage = (msg: string) => new CliError('usage', `${msg}\n(relayctl --help for usage)`);

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        url: { type: 'string' }, 'token-file': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
        state: { type: 'string' }, limit: { type: 'string' }, all: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw usage((err as Error).message);
  }
}

function messageIdArg(v: string | undefined, command: string): string {
  if (v === undefined) throw usage(`${command}: which message? give its id`);
  const id = v.toLowerCase();
  if (!isMessageId(id)) throw usage(`${command}: not a message id: ${JSON.stringify(v)} (32 hex digits, as relayctl queue shows)`);
  return id;
}

function limitArg(v: string | undefined): number {
  if (v === undefined) return 100;
  const n = /^[0-9]{1,4}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= MAX_LIST)) throw usage(`--limit must be a whole number 1..${MAX_LIST}`);
  return n;
}

function stateArg(v: string | undefined): State | null {
  if (v === undefined) return null;
  if (!(STATES as readonly string[]).includes(v)) throw usage(`--state must be one of ${STATES.join(', ')}`);
  return v as State;
}

function noMore(rest: string[], command: string): void {
  if (rest.length > 0) throw usage(`${command}: unexpected ${JSON.stringify(rest.join(' '))}`);
}

export interface Io {
  env: Record<string, string | undefined>;
  /** Where to look for the local relay's data/admin.json; unset = do not look. */
  cwd?: string;
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable;
}

/** Writes, waiting while the pipe is full. */
async function put(out: Writable, data: string | Uint8Array): Promise<void> {
  if (!out.write(data)) await once(out, 'drain');
}

/** After a 409: says what state the message is really in (or that it is gone). */
async function explainConflict(api: AdminClient, err: unknown, id: string, action: string, needs: readonly State[], hint: Partial<Record<State, string>>): Promise<never> {
  if (!(err instanceof CliError) || err.kind !== 'conflict') throw err;
  const m = await api.show(id);
  const tip = hint[m.state];
  if (needs.includes(m.state) && tip === undefined) throw new CliError('conflict', `cannot ${action} ${id}: its state changed meanwhile (now ${m.state}); try again`);
  throw new CliError('conflict', `cannot ${action} ${id}: it is ${m.state}, not ${needs.join(' or ')}${tip === undefined ? '' : ` (${tip})`}`);
}

/** Runs one relayctl command line; returns the exit code. Never throws. */
export async function main(argv: string[], io: Io): Promise<number> {
  try {
    await run(argv, io);
    return 0;
  } catch (err) {
    if (err instanceof CliError) {
      io.stderr.write(`relayctl: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr.write(`relayctl: unexpected error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    return 1;
  }
}

async function run(argv: string[], io: Io): Promise<void> {
  const write = (data: string | Uint8Array) => put(io.stdout, data);
  const json = (v: unknown) => write(JSON.stringify(v, null, 2) + '\n');
  const { values: o, positionals } = parse(argv);
  const [command, ...rest] = positionals;
  if (o.help || command === 'help') {
    await write(USAGE);
    return;
  }
  if (command === undefined) throw usage('no command given');
  const allowed = Object.hasOwn(COMMAND_OPTIONS, command) ? COMMAND_OPTIONS[command] : undefined;
  if (allowed === undefined) throw usage(`unknown command ${JSON.stringify(command)}`);
  for (const opt of ['state', 'limit', 'all'] as const) {
    if (o[opt] !== undefined && !allowed.includes(opt)) throw usage(`${command} does not take --${opt}`);
  }
  if (command === 'export' && o.json) throw usage('export writes the raw message; --json does not apply');
  // Checked before the config, so a usage error is reported as one even without --url.
  const state = stateArg(o.state);
  const limit = limitArg(o.limit);

  const cfg = resolveConfig({ url: o.url, tokenFile: o['token-file'] }, io.env, io.cwd);
  const api = new AdminClient(cfg);
  const now = () => Date.now();

  switch (command) {
    case 'status': {
      noMore(rest, command);
      const s = await api.summary();
      if (o.json) {
        const total = STATES.reduce((n, k) => n + s.states[k], 0);
        return json({
          url: api.baseUrl, agents: s.agents, states: s.states, total, oldest: s.oldest, oldestAgeMs: s.oldest === null ? null : Math.max(0, now() - s.oldest),
          stored: s.stored, storage: s.storage,
        });
      }
      return write(formatStatus(s, api.baseUrl, now()));
    }

    case 'queue': {
      noMore(rest, command);
      const messages = await api.list(state, limit);
      if (o.json) return json({ messages });
      return write(formatQueue(messages, now(), { withState: true, limit, empty: state === null ? 'queue is empty' : `no ${state} messages` }));
    }

    case 'show': {
      const id = messageIdArg(rest[0], command);
      noMore(rest.slice(1), command);
      const m = await api.show(id);
      const shown = { ...m, headers: await decodeHeaders(m.headers) };
      return o.json ? json(shown) : write(formatMessage(shown, now()));
    }

    case 'retry': {
      if (o.all) {
        noMore(rest, 'retry --all');
        const { retried, skipped } = await retryAll(api);
        if (o.json) return json({ retried, skipped });
        const lines = retried.map((id) => `${id}: deferred -> queued\n`).join('');
        const tail = skipped.length === 0 ? '' : `, ${skipped.length} skipped (no longer deferred)`;
        return write(`${lines}retried ${retried.length} deferred message${retried.length === 1 ? '' : 's'}${tail}\n`);
      }
      const id = messageIdArg(rest[0], 'retry');
      noMore(rest.slice(1), command);
      await api.retry(id).catch((err: unknown) =>
        explainConflict(api, err, id, 'retry', ['deferred'], { 'dead-letter': 'use relayctl dead-letter replay', 'in-flight': 'an agent has it now', queued: 'it is already waiting for an agent' }));
      return o.json ? json({ retried: [id], skipped: [] }) : write(`${id}: deferred -> queued\n`);
    }

    case 'flush': {
      noMore(rest, command);
      const flushed = await api.flush();
      return o.json ? json({ flushed }) : write(`flushed: ${flushed} deferred message${flushed === 1 ? '' : 's'} due now\n`);
    }

    case 'hold': {
      const id = messageIdArg(rest[0], command);
      noMore(rest.slice(1), command);
      await api.hold(id).catch((err: unknown) =>
        explainConflict(api, err, id, 'hold', ['queued', 'deferred'], { hold: 'it is already held', 'in-flight': 'an agent has it now' }));
      return o.json ? json({ id, state: 'hold' }) : write(`${id}: -> hold\n`);
    }

    case 'release': {
      const id = messageIdArg(rest[0], command);
      noMore(rest.slice(1), command);
      await api.release(id).catch((err: unknown) => explainConflict(api, err, id, 'release', ['hold'], {}));
      return o.json ? json({ id, state: 'queued' }) : write(`${id}: hold -> queued\n`);
    }

    case 'delete': {
      const id = messageIdArg(rest[0], command);
      noMore(rest.slice(1), command);
      await api.delete(id).catch((err: unknown) =>
        explainConflict(api, err, id, 'delete', STATES.filter((x) => x !== 'in-flight' && x !== 'incoming'), { 'in-flight': 'an agent has it now: try again when it settles', bouncing: 'its bounce is being sent now: try again when it settles' }));
      return o.json ? json({ id, deleted: true }) : write(`${id}: deleted\n`);
    }

    case 'dead-letter': {
      const [sub, arg, ...extra] = rest;
      if (sub !== 'list' && sub !== 'replay' && sub !== 'purge') throw usage('dead-letter: list, replay <id> or purge <id>');
      if (sub === 'list') {
        noMore(arg === undefined ? [] : [arg, ...extra], 'dead-letter list');
        const messages = await api.deadLetter(limit);
        if (o.json) return json({ messages });
        return write(formatQueue(messages, now(), { withState: false, limit, empty: 'no dead-lettered messages' }));
      }
      if (o.limit !== undefined) throw usage(`dead-letter ${sub} does not take --limit`);
      if (sub === 'replay') {
        const id = messageIdArg(arg, 'dead-letter replay');
        noMore(extra, 'dead-letter replay');
        const as = await api.replay(id).catch((err: unknown) => {
          // Still dead-letter, but every recipient was delivered: the Worker's own words say so.
          if (err instanceof CliError && err.kind === 'conflict' && err.message.includes('nothing owed')) throw new CliError('conflict', `cannot replay ${err.message}`);
          return explainConflict(api, err, id, 'replay', ['dead-letter'], { deferred: 'use relayctl retry' });
        });
        // A new id: the agent's journal must not answer the replay from the old one's refusals.
        return o.json ? json({ id: as, replayedFrom: id, state: 'queued' })
          : write(`${id}: dead-letter -> queued${as === id ? '' : ` as ${as}`} (fresh retry clock)\n`);
      }
      if (sub === 'purge') {
        const id = messageIdArg(arg, 'dead-letter purge');
        noMore(extra, 'dead-letter purge');
        await api.purge(id).catch((err: unknown) =>
          explainConflict(api, err, id, 'purge', ['dead-letter', 'bounced'], {}));
        return o.json ? json({ id, purged: true }) : write(`${id}: purged\n`);
      }
      return;
    }

    case 'export': {
      const id = messageIdArg(rest[0], command);
      noMore(rest.slice(1), command);
      if (io.stdout.isTTY === true) throw usage(`refusing to write a raw message to a terminal; redirect it: relayctl export ${id} > ${id}.eml`);
      const raw = await api.raw(id);
      const hash = createHash(raw.digest.algorithm);
      let size = 0;
      for await (const piece of raw.body) {
        // The digest covers the bytes after Cloudflare's block (X-Message-Prefix); the size all.
        const skip = raw.prefix - size;
        hash.update(skip > 0 ? piece.subarray(Math.min(skip, piece.byteLength)) : piece);
        size += piece.byteLength;
        await write(piece);
      }
      const digest = hash.digest('hex');
      const alg = raw.digest.algorithm;
      if (size !== raw.size || digest !== raw.digest.hex) {
        throw new CliError('integrity', `export of ${id} is incomplete or damaged: got ${size} bytes (${alg} ${digest}), the queue holds ${raw.size} bytes (${alg} ${raw.digest.hex}); do not use this output`);
      }
      return;
    }
  }
}

/** Retries every deferred message, page by page; one that left `deferred` meanwhile is skipped. */
async function retryAll(api: AdminClient): Promise<{ retried: string[]; skipped: string[] }> {
  const retried: string[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (;;) {
    const page = await api.list('deferred', MAX_LIST);
    // A retried message that failed again is deferred again: never loop over it.
    const fresh = page.filter((m) => !seen.has(m.id));
    for (const m of fresh) {
      seen.add(m.id);
      try {
        await api.retry(m.id);
        retried.push(m.id);
      } catch (err) {
        if (err instanceof CliError && (err.kind === 'conflict' || err.kind === 'not-found')) skipped.push(m.id);
        else throw err;
      }
    }
    if (fresh.length === 0 || page.length < MAX_LIST) return { retried, skipped };
  }
}
