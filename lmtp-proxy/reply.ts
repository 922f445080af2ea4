// An SMTP/LMTP reply is data: parsed once at the socket, never thrown as a string.

export interface Reply {
  code: number;
  enhanced: string | null;  // RFC 3463 'x.y.z', only when the server offers ENHANCEDSTATUSCODES
  lines: string[];          // text of each line, without the 'NNN-' / 'NNN ' prefix
}

export interface ReplyLine {
  code: number;
  more: boolean;  // 'NNN-': a continuation line follows
  text: string;
}

// RFC 5321 4.2: Reply-code is 2-5, 0-5, 0-9; it is followed by '-', a space or the line end.
const LINE = /^([2-5][0-5][0-9])(?:([ -])(.*))?$/s;
// RFC 3463 2: class.subject.detail, subject and detail 1-3 digits.
const ENHANCED = /^([245])\.[0-9]{1,3}\.[0-9]{1,3}(?= |$)/;

/** One line of a reply, or null when it is not one. */
export function parseReplyLine(line: string): ReplyLine | null {
  const m = LINE.exec(line);
  if (!m) return null;
  return { code: Number(m[1]), more: m[2] === '-', text: m[3] ?? '' };
}

/**
 * A complete reply from its raw lines: every line has the same code, only the last one
 * lacks the '-'. Returns null for anything else. `enhanced` says whether the server
 * offered ENHANCEDSTATUSCODES; the code is taken only when its class matches the reply's.
 */
export function parseReply(raw: readonly string[], enhanced: boolean): Reply | null {
  const lines: string[] = [];
  let code = 0;
  for (const [i, s] of raw.entries()) {
    const l = parseReplyLine(s);
    const last = i === raw.length - 1;
    if (!l || l.more === last || (i > 0 && l.code !== code)) return null;
    code = l.code;
    lines.push(l.text);
  }
  if (lines.length === 0) return null;
  const m = enhanced ? ENHANCED.exec(lines[0] ?? '') : null;
  const sameClass = m !== null && m[1] === String(code)[0];
  return { code, enhanced: m && sameClass ? m[0] : null, lines };
}

/** Lines joined with ' ', the enhanced code stripped from each line that repeats it. */
export function replyText(r: Reply): string {
  const e = r.enhanced;
  return r.lines
    .map((l) => (e !== null && (l === e || l.startsWith(e + ' ')) ? l.slice(e.length + 1) : l))
    .join(' ');
}

/** Back to wire form, e.g. to pass a reply through to the other side. */
export function formatReply(r: Reply): string {
  const lines = r.lines.length ? r.lines : [''];
  return lines
    .map((l, i) => `${r.code}${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`)
    .join('');
}
