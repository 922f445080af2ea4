// Every case of the hostile and odd input corpus (corpus.ts) through the whole local path:
// SMTP ingress -> Worker + queue object in workerd -> WebSocket -> edge-agent -> LMTP, once
// into a real Dovecot and once into the embedded Maildir target. Each case must end exactly
// as corpus.ts says: delivered (and then these bytes after the trace header, in this mailbox)
// or refused (at this stage, with this code and text). Every wait is bounded; after each case
// the queue must be empty (nothing stuck, nothing silently kept), and at the end the relay
// must still deliver a plain message.
import t, { type Test } from 'tap';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../edge-agent/ops/log.ts';
import { LmtpClient } from '../../lmtp-proxy/client.ts';
import { startLocalRelay, type LocalRelay } from '../../local/relay.ts';
import { startDovecot, type DovecotFixture } from '../../bench/lib/dovecot.ts';
import { dovecotSkip } from '../helpers/skip.ts';
import { drained, maildirNew, splitTrace, waitFor } from '../helpers/mail.ts';
import { SmtpDialog, type DialogReply } from '../helpers/smtp-dialog.ts';
import {
  CASES, LIMIT, MiB, TARGETS, checkJapanese, forgetBig, sha256,
  type CorpusCase, type Outcome, type Stage, type Target,
} from './corpus.ts';

const skip = dovecotSkip();

type Observed =
  | { kind: 'delivered'; ids: string[]; reply: string }
  | { kind: 'refused'; stage: Stage | null; code: number; text: string; transcript: number[] };

interface Rig {
  target: Target;
  relay: LocalRelay;
  /** Files of a mailbox (Dovecot user or embedded directory), as bytes. */
  read(mailbox: string): Promise<Buffer[]>;
}

let dovecot: DovecotFixture | null = null;
const rigs = new Map<Target, Rig>();
const dirs: string[] = [];
let baseline: { pid: number; rssKb: number; peakKb: number }[] = [];

async function relayFor(target: string | undefined): Promise<LocalRelay> {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailbridge-corpus-'));
  dirs.push(dataDir);
  return startLocalRelay({ dataDir, smtpPort: 0, target, log: silentLogger });
}

t.before(async () => {
  if (skip) return;
  dovecot = await startDovecot();
  const d = dovecot;
  const [viaDovecot, embedded] = await Promise.all([relayFor(`lmtp://127.0.0.1:${d.lmtpPort}`), relayFor(undefined)]);
  rigs.set('dovecot', { target: 'dovecot', relay: viaDovecot, read: (user) => d.readMessages(user) });
  rigs.set('embedded', { target: 'embedded', relay: embedded, read: (name) => maildirNew(join(embedded.maildirRoot ?? '', name)) });
  baseline = await workerdMemory();
});

t.teardown(async () => {
  for (const r of rigs.values()) await r.relay.stop();
  await dovecot?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

// Each wait has a bound well under the subtest's own timeout.
const CLIENT_TIMEOUTS = { connect: 5_000, greeting: 10_000, command: 30_000, dataBlock: 30_000, final: 60_000 };

async function* pieces(b: Buffer): AsyncGenerator<Uint8Array> {
  // 64 KiB writes, as a socket would carry them (corpus.ts puts dots on these seams).
  for (let i = 0; i < b.byteLength; i += 64 * 1024) yield b.subarray(i, i + 64 * 1024);
}

const idsIn = (text: string): string[] => /queued as ((?:[0-9a-f]{32} ?)+)/.exec(text)?.[1]?.trim().split(' ') ?? [];

async function sendClient(port: number, sender: string, recipients: string[], raw: Buffer, declareSize: boolean, eightBit: boolean): Promise<Observed> {
  const client = new LmtpClient({ protocol: 'smtp', host: '127.0.0.1', port }, { localName: 'corpus.client', timeouts: CLIENT_TIMEOUTS });
  try {
    const [r] = await client.deliver({ sender, recipients }, pieces(raw), { size: declareSize ? raw.byteLength : undefined, eightBit });
    if (!r) throw new Error('no result from the client');
    if (r.code === 250) return { kind: 'delivered', ids: idsIn(r.text), reply: r.text };
    return { kind: 'refused', stage: null, code: r.code, text: r.text, transcript: [r.code] };
  } finally {
    await client.close();
  }
}

const lfCount = (b: Buffer): number => b.reduce((n, x) => n + (x === 0x0a ? 1 : 0), 0);
const refusedBy = (stage: Stage, rs: DialogReply[]): Observed => {
  const first = rs[0] ?? { code: 0, text: 'no reply' };
  return { kind: 'refused', stage, code: first.code, text: first.text, transcript: rs.map((r) => r.code) };
};

async function sendDialog(port: number, tr: Extract<CorpusCase['transport'], { kind: 'dialog' }>): Promise<Observed> {
  const d = await SmtpDialog.open(port);
  try {
    const [greeting] = await d.replies(1);
    if (greeting?.code !== 220) throw new Error(`greeting: ${JSON.stringify(greeting)}`);
    const [ehlo] = await d.send('EHLO corpus.client\r\n');
    if (ehlo?.code !== 250) throw new Error(`EHLO: ${JSON.stringify(ehlo)}`);
    const mail = await d.send(tr.mail, lfCount(tr.mail));
    if (mail[0]?.code !== 250) return refusedBy('MAIL FROM', mail);
    let firstRefusal: Observed | null = null;
    let accepted = 0;
    for (const rcpt of tr.rcpts) {
      const rs = await d.send(rcpt, lfCount(rcpt));
      if (rs[0]?.code === 250) accepted++;
      else firstRefusal ??= refusedBy('RCPT TO', rs);
    }
    if (accepted === 0) return firstRefusal ?? refusedBy('RCPT TO', []);
    const [data] = await d.send('DATA\r\n');
    if (data?.code !== 354) throw new Error(`DATA: ${JSON.stringify(data)}`);
    const [done] = await d.send(tr.wire, 1, 60_000);
    if (!done) throw new Error('no reply to the end of data');
    if (done.code === 250) return { kind: 'delivered', ids: idsIn(done.text), reply: done.text };
    return refusedBy('end of DATA', [done]);
  } finally {
    await d.quit();
  }
}

/** The stored file of queue id `id` in `mailbox`: what Dovecot added before the trace header, and what follows it. */
async function storedCopy(rig: Rig, mailbox: string, id: string, ms = 20_000): Promise<{ prefix: string; rest: Buffer }> {
  const needle = `(mailbridge) id ${id};`;
  const [file] = await waitFor(`the copy of ${id} in ${mailbox}`, async () =>
    (await rig.read(mailbox)).filter((f) => f.includes(needle)), 1, ms);
  const at = (file ?? Buffer.alloc(0)).indexOf('Received: from cloudflare-email-routing by ');
  if (!file || at < 0) throw new Error('no trace header');
  const parts = splitTrace(file.subarray(at));
  if (!parts || parts.id !== id) throw new Error(`trace header does not name ${id}`);
  return { prefix: file.subarray(0, at).toString('latin1'), rest: parts.rest };
}

const show = (b: Buffer): string => (b.length > 160
  ? `${b.length} bytes, sha256 ${sha256(b).slice(0, 16)}…, starts ${JSON.stringify(b.subarray(0, 40).toString('latin1'))}`
  : JSON.stringify(b.toString('latin1')));

/** Resident and peak memory (kB) of every workerd process this test started. */
async function workerdMemory(): Promise<{ pid: number; rssKb: number; peakKb: number }[]> {
  const out: { pid: number; rssKb: number; peakKb: number }[] = [];
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p)) continue;
    const status = await readFile(`/proc/${p}/status`, 'utf8').catch(() => '');
    if (Number(/\nPPid:\s+(\d+)/.exec(status)?.[1]) !== process.pid || /^Name:\s+(\S+)/.exec(status)?.[1] !== 'workerd') continue;
    out.push({ pid: Number(p), rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]), peakKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) });
  }
  return out;
}

async function runCase(t: Test, rig: Rig, c: CorpusCase): Promise<void> {
  const raw = c.raw();
  const expected: Outcome = c.expect(raw)[rig.target];
  const bug = c.bug?.[rig.target];
  const exact = bug ? { todo: `bug: ${bug}` } : {};
  const port = rig.relay.smtpPort;
  const tr = c.transport;
  const observed = tr.kind === 'client' ? await sendClient(port, c.sender, c.recipients, raw, tr.declareSize, tr.eightBit) : await sendDialog(port, tr);

  if (observed.kind !== expected.kind) {
    t.comment(`observed: ${JSON.stringify(observed)}`);
    if (observed.kind === 'delivered' && rig.target === 'dovecot' && observed.ids[0]) {
      const copy = await storedCopy(rig, 'alice', observed.ids[0], 3_000).catch(() => null);
      if (copy) t.comment(`Dovecot stored it for alice with: ${JSON.stringify(copy.prefix)}`);
    }
  }
  if (expected.kind === 'refused') {
    t.match(observed, { kind: 'refused' }, `refused: ${expected.reason}`, exact);
    if (observed.kind === 'refused') {
      if (observed.stage !== null) t.equal(observed.stage, expected.stage, `at ${expected.stage}`, exact);
      t.equal(observed.code, expected.code, `with ${expected.code}`, exact);
      t.match(observed.text, expected.text, `reply text: ${observed.text}`, exact);
      if (expected.transcript) t.same(observed.transcript, expected.transcript, `replies to that write: ${expected.transcript.join(', ')}`, exact);
    }
  } else {
    t.match(observed, { kind: 'delivered' }, `delivered: ${expected.rule}`, exact);
    if (observed.kind === 'delivered') {
      t.equal(observed.ids.length, 1, `one queue id in "${observed.reply}"`);
      const copy = await storedCopy(rig, expected.mailbox, observed.ids[0] ?? '');
      const same = copy.rest.equals(expected.stored);
      t.ok(same, `mailbox ${expected.mailbox} holds exactly the expected ${expected.stored.byteLength} bytes`, exact);
      if (!same) t.comment(`expected ${show(expected.stored)}\n  stored   ${show(copy.rest)}`);
      if (rig.target === 'dovecot') {
        t.match(copy.prefix, /^(?:[A-Za-z-]+: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*$/, 'before the trace header: only Dovecot\'s own header fields');
        if (expected.returnPath !== undefined) {
          const want = Buffer.from(`Return-Path: <${expected.returnPath}>\r\n`, 'utf8').toString('latin1');
          t.ok(copy.prefix.includes(want), `Dovecot's Return-Path is <${expected.returnPath}>`, exact);
          if (!copy.prefix.includes(want)) t.comment(`Dovecot's header fields: ${JSON.stringify(copy.prefix)}`);
        }
      }
    }
  }
  if (observed.kind === 'refused') {
    // Invariants that hold for any refusal: a real SMTP answer, never a temporary one here
    // (a 4xx would make the sender retry forever), never a silent drop.
    t.ok(observed.code >= 500 && observed.code < 600, `a permanent SMTP refusal (${observed.code}), not a tempfail or a local error`);
  }
  for (const box of c.untouched ?? []) {
    const name = rig.target === 'dovecot' ? box : `${box}@example.test`;
    t.same((await rig.read(name)).length, 0, `nothing reached ${name}`);
  }
  await drained(() => rig.relay.runtime.summary(), 30_000);
  t.pass('the queue is empty afterwards: nothing stuck in-flight, deferred or dead-lettered');
}

t.test('the Japanese literals are what they claim to be', async (t) => {
  t.doesNotThrow(checkJapanese);
});

t.test('the big cases are the sizes they claim', async (t) => {
  const exact = CASES.find((c) => c.id === 'size-25-mib');
  const over = CASES.find((c) => c.id === 'size-25-mib-plus-1-counted');
  t.equal(exact?.raw().byteLength, LIMIT, '25 MiB is 26,214,400 bytes');
  t.equal(over?.raw().byteLength, LIMIT + 1);
});

for (const target of TARGETS) {
  t.test(`corpus into the ${target} target`, { skip }, async (t) => {
    const rig = rigs.get(target);
    if (!rig) throw new Error(`no rig for ${target}`);
    for (const c of CASES) {
      await t.test(`${c.id}: ${c.title}`, { timeout: c.big ? 120_000 : 30_000 }, (t) => runCase(t, rig, c));
    }
    // Nothing crashed: the same relay still delivers a plain message.
    const canary = Buffer.from(`Message-ID: <canary-${target}@corpus.example.net>\r\nSubject: still alive\r\n\r\nok\r\n`, 'latin1');
    const observed = await sendClient(rig.relay.smtpPort, 'sender@example.net', ['alice@example.test'], canary, true, true);
    t.match(observed, { kind: 'delivered' }, 'after the whole corpus the relay still delivers');
    if (observed.kind === 'delivered') {
      const copy = await storedCopy(rig, target === 'dovecot' ? 'alice' : 'alice@example.test', observed.ids[0] ?? '');
      t.ok(copy.rest.equals(canary), 'byte-exact');
    }
  });
}

t.test('memory of the Worker stays bounded', { skip }, async (t) => {
  forgetBig();
  // The Worker streams a message through 1 MiB chunk rows: two 25 MiB messages (and one
  // refused at 25 MiB + 1) per runtime must not cost workerd anything near their size
  // several times over. Peak RSS (VmHWM) against the RSS before the corpus.
  const after = await workerdMemory();
  if (after.length === 0) {
    t.comment('no /proc here: workerd memory not measured');
    return;
  }
  t.equal(after.length, 2, 'one workerd per relay');
  for (const a of after) {
    const b = baseline.find((x) => x.pid === a.pid);
    if (!b) continue;
    t.comment(`workerd ${a.pid}: RSS ${b.rssKb >> 10} MiB before the corpus, peak ${a.peakKb >> 10} MiB, now ${a.rssKb >> 10} MiB`);
    t.ok(a.peakKb - b.rssKb < (160 * MiB) / 1024, `workerd ${a.pid}: peak growth ${(a.peakKb - b.rssKb) >> 10} MiB stays under 160 MiB`);
  }
});
