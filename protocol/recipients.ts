// Whether a recipient is on the list the agent published (docs/operations.md,
// "Recipients known at the edge"). Pure, no runtime APIs: the queue object uses it
// at SMTP time, the agent's tests use it to check what the object will do.

/**
 * `entries`: lowercase 'local@domain' and '@domain' (every address of that domain).
 * `delimiter`: the home server's recipient_delimiter ('' = none): 'a+x@d' is known when
 * 'a@d' is. Matching ignores case, as Dovecot's usual `auth_username_format = %Lu` does.
 */
export function recipientKnown(entries: ReadonlySet<string>, delimiter: string, address: string): boolean {
  const a = address.toLowerCase();
  const at = a.lastIndexOf('@');
  if (at <= 0) return false;
  if (entries.has(a)) return true;
  const local = a.slice(0, at);
  const domain = a.slice(at);
  if (delimiter !== '') {
    const cut = local.indexOf(delimiter);
    if (cut > 0 && entries.has(local.slice(0, cut) + domain)) return true;
  }
  return entries.has(domain);
}
