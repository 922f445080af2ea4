// Reads a delivery status notification (RFC 3464) the soak's bounce relay received, by bytes:
// the multipart/report split at its boundary, the message/delivery-status part's per-recipient
// fields, and the Message-ID quoted in the text/rfc822-headers part. Null when it is not one.

export interface DsnRecipient { recipient: string; action: string; status: string }

export interface ReadDsn {
  /** X-Mailbridge-Queue-ID of the delivery-status part. */
  queueId: string | null;
  recipients: DsnRecipient[];
  /** The Message-ID in the quoted original headers (without <>), or null. */
  originalMessageId: string | null;
}

/** Header fields of a header section, unfolded, names lowercased; the first of each name. */
function fields(section: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of section.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const m = /^([!-9;-~]+):[ \t]*(.*)$/.exec(line);
    if (m?.[1] && !out.has(m[1].toLowerCase())) out.set(m[1].toLowerCase(), m[2] ?? '');
  }
  return out;
}

/** Splits at the first empty line: header section and body. */
function split(text: string): [string, string] {
  const at = text.indexOf('\r\n\r\n');
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + 4)];
}

export function readDsn(body: Buffer): ReadDsn | null {
  // latin1: one char per byte, so 8-bit quoted headers neither break nor shift the parse.
  const [head, rest] = split(body.toString('latin1'));
  const type = fields(head).get('content-type') ?? '';
  if (!/^multipart\/report\s*;/i.test(type) || !/report-type="?delivery-status"?/i.test(type)) return null;
  const boundary = /boundary="([^"]+)"|boundary=([^\s;]+)/i.exec(type);
  const b = boundary?.[1] ?? boundary?.[2];
  if (!b) return null;
  const end = rest.indexOf(`\r\n--${b}--`);
  const parts = (end < 0 ? rest : rest.slice(0, end)).split(`--${b}\r\n`).slice(1).map((p) => p.replace(/\r\n$/, ''));
  let status: string | null = null;
  let quoted: string | null = null;
  for (const p of parts) {
    const [h, content] = split(p);
    const ct = (fields(h).get('content-type') ?? '').toLowerCase();
    if (ct.startsWith('message/delivery-status')) status = content;
    else if (ct.startsWith('text/rfc822-headers')) quoted = content;
  }
  if (status === null) return null;
  // Per-message fields, then one group per recipient, each group separated by an empty line.
  const groups = status.split(/\r\n\r\n/);
  const perMessage = fields(groups[0] ?? '');
  const recipients = groups.slice(1).map((g) => fields(g)).filter((f) => f.has('final-recipient')).map((f) => ({
    recipient: (f.get('final-recipient') ?? '').replace(/^rfc822;\s*/i, ''),
    action: (f.get('action') ?? '').toLowerCase(),
    status: f.get('status') ?? '',
  }));
  const mid = quoted === null ? null : /<([^>]+)>/.exec(fields(split(`${quoted}\r\n\r\n`)[0]).get('message-id') ?? '')?.[1] ?? null;
  return { queueId: perMessage.get('x-mailbridge-queue-id') ?? null, recipients, originalMessageId: mid };
}
