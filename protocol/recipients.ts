// Whether a recipient is on the home server's published recipients list. Pure and free of
// runtime APIs: the queue object calls it on every RCPT, the agent's tests call it too.
// An empty list means "no list" (every address accepted); callers decide that, not this.

/**
 * True when `address` is on `list` (entries as the agent publishes them: lowercase
 * 'local@domain' or '@domain'): the address itself; else, with a delimiter set, the address
 * without its extension ('a+x@d' → 'a@d', cut at the first delimiter of the local part, as
 * Postfix's recipient_delimiter does); else the domain's catch-all '@domain'.
 */
export function recipientKnown(list: ReadonlySet<string>, delimiter: string, address: string): boolean {
  const a = address.toLowerCase();
  // The domain follows the last '@': a quoted local part may hold one of its own. No local
  // part, no address: '@domain' asked about must not match the catch-all entry itself.
  const at = a.lastIndexOf('@');
  if (at < 1) return false;
  if (list.has(a)) return true;
  const local = a.slice(0, at);
  const domain = a.slice(at + 1);
  if (delimiter !== '') {
    // 'a+x' has the extension 'x'; '+x' has none: a local part never starts with its extension.
    const cut = local.indexOf(delimiter);
    if (cut > 0 && list.has(`${local.slice(0, cut)}@${domain}`)) return true;
  }
  return list.has(`@${domain}`);
}
