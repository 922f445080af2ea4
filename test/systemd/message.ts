// The message test/systemd/run.ts has the relay (relay.ts, in the container) post and the
// packaged agent deliver: 8-bit, CRLF, byte-exact in Dovecot after the trace header.
export function systemdMessage(id: string): Buffer {
  return Buffer.from(`From: sender@example.net\r\nTo: alice@example.test\r\nSubject: systemd ${id}\r\nMessage-ID: <${id}@example.net>\r\n\r\nDelivered by the packaged agent under a real systemd: caf\xe9 ${id}\r\n`, 'latin1');
}
