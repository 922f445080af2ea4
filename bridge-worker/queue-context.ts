// What the queue object's modules share (relay-do.ts builds it once per instance): its store,
// env and sockets, the verdict board, and what one invocation carries between modules. Each
// module takes this, never the class. Written for hibernation: per-socket state lives in the
// socket's attachment, the rest in SQLite; what is here is rebuilt after any wake-up.
import { encodeFrame, type ObjectFrame } from '../protocol/wire.ts';
import { readConfig, type Env } from './env.ts';
import type { RetryPolicy } from './retry-policy.ts';
import type { MessageStore } from './store.ts';
import type { RecipientListStore } from './recipient-store.ts';
import type { VerdictBoard } from './smtp-verdict.ts';
import type { WarningStore } from './warning-store.ts';

/** Per-socket state, kept small: it is serialized into the socket's attachment. */
export interface Attachment {
  v: 1;
  session: string;
  /** Agent name from hello; null until the hello arrives. */
  agent: string | null;
  window: number;
  /** Bytes of chunk data the agent is ready to receive. */
  credit: number;
  /** The message being streamed to this socket, if any. */
  cursor: { id: string; seq: number; chunks: number } | null;
  /** After a shutdown nack: lease nothing more to this socket. */
  draining: boolean;
  /** When the socket was accepted: its age before the first heartbeat. */
  connectedAt?: number;
  /** Closed by us (violation, silence): leases released, never leased to again. */
  closed?: boolean;
  /** The agent's hello said it has a bounce relay: bounce tasks may go to it. */
  bounces?: boolean;
  /** Its hello said `warnings` too: delay warnings (bounce tasks with reason `delayed`) may go to it. */
  warnings?: boolean;
  /** The protocol version of the agent's hello (absent: a socket accepted before it was kept, treated as 1). */
  version?: number;
  /** The agent's hello said it fetches R2 bodies: messages stored there may go to it. */
  fetch?: boolean;
  /** Its hello said its body fetches present its session: none without it gets a body leased here. */
  fetchSession?: boolean;
}

export interface QueueContext {
  readonly store: MessageStore;
  readonly lists: RecipientListStore;
  readonly warnings: WarningStore;
  readonly env: Env;
  /** The Durable Object's state: its sockets, alarm, SQLite size and id. */
  readonly state: DurableObjectState;
  readonly verdicts: VerdictBoard;
  /** A pump stopped at its budget with credit left: the next alarm is due at once. */
  pumpPending: boolean;
  /**
   * This invocation made work the answering connection may not take (a bounce task, a message
   * handed back by an agent shutting down): the other connections are pumped too.
   */
  forOthers: boolean;
  /** The recipients list in force, as a set; undefined until first needed after a wake-up. */
  recipients: { delimiter: string; entries: Set<string> } | null | undefined;
}

export function attachment(ws: WebSocket): Attachment | null {
  const a: unknown = ws.deserializeAttachment();
  return typeof a === 'object' && a !== null && (a as Attachment).v === 1 ? (a as Attachment) : null;
}

export function send(ws: WebSocket, frame: ObjectFrame): void {
  ws.send(encodeFrame(frame));
}

/** Read per use, so a bad value fails the ack that needs it, loudly, not the constructor. */
export function retryPolicy(q: QueueContext): RetryPolicy {
  return readConfig(q.env).retry;
}
