// Asks Dovecot whether a message is already stored, through its doveadm HTTP API
// (doveadm_api_key, `service doveadm { inet_listener http }`). deliver.ts asks only after an
// unknown outcome: the body went out and no final reply came back (a lost connection, a
// reply it could not read, the agent killed). Then Dovecot may hold the message though
// nobody heard it say so, and delivering again would store a second copy.
//
// One POST per recipient still owed: a `search` in every mailbox of its user (Sieve may have
// filed it anywhere), saved since a day before the first attempt (so a large mailbox is not
// read whole), for our trace header's `(mailbridge) id <id>;`.
// The queue id is 32 random hex digits: no other message carries it.
//
// The user: the envelope recipient without its +detail (recipientDelimiter), as Dovecot's
// LMTP derives it; Dovecot's auth then maps it (auth_username_format, e.g. %Ln) for doveadm as
// for LMTP. Anything but a clear answer for every recipient is a DoveadmError: the caller
// must not deliver then.
import { DAY_MS } from './journal.ts';

export class DoveadmError extends Error {
  override name = 'DoveadmError';
}

/** The API's answer to one command: `[type, payload, tag]` (Dovecot's doveadm-http). */
type Answer = [string, unknown, string];

const isAnswer = (x: unknown): x is Answer =>
  Array.isArray(x) && x.length === 3 && typeof x[0] === 'string' && typeof x[2] === 'string';

/** Longest wait for Dovecot's answer: a search of a day of mail is quick; a hung API must not hold the message. */
export const DOVEADM_TIMEOUT_MS = 30_000;

/** Dovecot's exit codes in an `error` answer (sysexits.h), in words. */
const EXIT: Record<number, string> = {
  64: 'bad request (is this Dovecot too old for the HTTP API?)',
  67: 'user unknown to Dovecot (is recipientDelimiter the same as Dovecot\'s recipient_delimiter?)',
  68: 'no such host',
  75: 'temporary failure',
};

export class Doveadm {
  /** <url>/doveadm/v1 */
  readonly endpoint: string;
  readonly #auth: string;
  readonly #delimiter: string;
  readonly #timeoutMs: number;

  constructor(o: { url: string; apiKey: string; recipientDelimiter: string; timeoutMs?: number }) {
    this.endpoint = new URL('doveadm/v1', o.url.endsWith('/') ? o.url : `${o.url}/`).href;
    this.#auth = `X-Dovecot-API ${Buffer.from(o.apiKey, 'utf8').toString('base64')}`;
    this.#delimiter = o.recipientDelimiter;
    this.#timeoutMs = o.timeoutMs ?? DOVEADM_TIMEOUT_MS;
  }

  /** The Dovecot user an envelope recipient is stored for, before Dovecot's own auth_username_format. */
  userOf(recipient: string): string {
    const at = recipient.lastIndexOf('@');
    const local = at < 0 ? recipient : recipient.slice(0, at);
    const cut = this.#delimiter === '' ? -1 : local.indexOf(this.#delimiter);
    // Dovecot's LMTP strips the detail before it looks the user up; its auth does not.
    return cut <= 0 ? recipient : local.slice(0, cut) + recipient.slice(local.length);
  }

  /**
   * Which of `recipients` already hold message `id` (saved at or after `since` − a day, in ms).
   * Throws DoveadmError when Dovecot cannot say for each of them.
   */
  async stored(id: string, recipients: readonly string[], since: number): Promise<Map<string, boolean>> {
    if (!/^[0-9A-Za-z_-]+$/.test(id)) throw new DoveadmError(`cannot search for the queue id ${JSON.stringify(id)}`);
    const savedSince = String(Math.max(0, Math.floor((since - DAY_MS) / 1000)));
    const out = new Map<string, boolean>();
    // One request per recipient: Dovecot 2.3 answers a batch in which one command failed with
    // JSON that lacks a comma, and the failure is what an operator needs to read.
    for (const r of recipients) out.set(r, await this.#search(r, ['mailbox', '*', 'savedsince', savedSince, 'header', 'Received', `(mailbridge) id ${id};`]));
    return out;
  }

  /** Whether the URL and the key work: an empty batch, which Dovecot answers 200 `[]` once the key is right. */
  async check(): Promise<void> {
    const res = await this.#post('[]');
    if (!Array.isArray(res)) throw new DoveadmError(`${this.endpoint}: the answer is not a list`);
  }

  /** POSTs `body`; the parsed answer, or a DoveadmError that says why there is none. */
  async #post(body: string): Promise<unknown> {
    let res: Response;
    let text: string;
    try {
      // Node's fetch keeps the connection alive when the server allows it (Dovecot 2.3 closes it).
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: { Authorization: this.#auth, 'Content-Type': 'application/json' },
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      text = await res.text();
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${this.#timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
      throw new DoveadmError(`${this.endpoint}: ${why}`);
    }
    if (res.status === 401) {
      throw new DoveadmError(`${this.endpoint}: HTTP 401: the API key is not Dovecot's doveadm_api_key (a key file Dovecot reads with "<" must have no line end)`);
    }
    if (res.status !== 200) throw new DoveadmError(`${this.endpoint}: HTTP ${res.status}`);
    try {
      return JSON.parse(text);
    } catch {
      throw new DoveadmError(`${this.endpoint}: the answer is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    }
  }

  /** True when the search for `query` in the mailboxes of the recipient's user finds a message. */
  async #search(recipient: string, query: string[]): Promise<boolean> {
    const user = this.userOf(recipient);
    const answers = await this.#post(JSON.stringify([['search', { user, query }, 'q']]));
    const a: unknown = Array.isArray(answers) ? answers[0] : undefined;
    if (!isAnswer(a)) throw new DoveadmError(`${this.endpoint}: no answer to the search for ${user}`);
    const [type, payload] = a;
    if (type === 'doveadmResponse' && Array.isArray(payload)) return payload.length > 0;
    const code = type === 'error' && typeof payload === 'object' && payload !== null ? (payload as { exitCode?: unknown; type?: unknown }) : {};
    const why = typeof code.exitCode === 'number' && code.exitCode !== 0 ? `exit code ${code.exitCode}${EXIT[code.exitCode] ? `: ${EXIT[code.exitCode]}` : ''}`
      : code.type === 'unAuthorized' ? 'not allowed (doveadm_allowed_commands must include search)' : `an answer of type ${JSON.stringify(type)}`;
    throw new DoveadmError(`search for ${user}: ${why}`);
  }
}
