// The recipients-list matcher the queue object runs on each RCPT: exact, then without the
// +extension, then the domain's catch-all; never a looser match than those three.
import t from 'tap';
import { recipientKnown } from '../../protocol/recipients.ts';

const list = new Set(['alice@example.test', 'bob.smith@example.test', '@catchall.test']);

t.test('exact match, case-insensitive on the address asked about', async (t) => {
  t.ok(recipientKnown(list, '', 'alice@example.test'));
  t.ok(recipientKnown(list, '', 'Alice@Example.TEST'));
  t.notOk(recipientKnown(list, '', 'carol@example.test'));
});

t.test('the +extension is cut only when a delimiter is set', async (t) => {
  t.notOk(recipientKnown(list, '', 'alice+news@example.test'), 'no delimiter: a+x is another address');
  t.ok(recipientKnown(list, '+', 'alice+news@example.test'));
  t.ok(recipientKnown(list, '+', 'ALICE+News@example.test'));
  t.ok(recipientKnown(list, '+', 'alice+a+b@example.test'), 'cut at the first delimiter');
  t.notOk(recipientKnown(list, '-', 'alice+news@example.test'), 'another delimiter does not cut "+"');
  t.ok(recipientKnown(list, '-', 'alice-news@example.test'));
  t.notOk(recipientKnown(list, '+', 'alicex+news@example.test'));
  t.notOk(recipientKnown(new Set(['@x.test']), '+', '+@example.test'), 'a local part that starts with the delimiter has no base');
  t.notOk(recipientKnown(new Set(['@example.test']), '+', 'a+b@other.test'));
});

t.test("a delimiter inside the base name ('.' in bob.smith) cuts there", async (t) => {
  // Postfix behaves the same with recipient_delimiter = '.': such a list needs the full names.
  t.ok(recipientKnown(list, '.', 'bob.smith@example.test'), 'the exact entry still matches');
  t.notOk(recipientKnown(list, '.', 'bob.smith.x@example.test'), "cut at the first '.': bob@example.test is not on the list");
});

t.test('@domain is a catch-all for that domain only', async (t) => {
  t.ok(recipientKnown(list, '', 'anyone@catchall.test'));
  t.ok(recipientKnown(list, '+', 'anyone+x@CatchAll.test'));
  t.notOk(recipientKnown(list, '', 'anyone@sub.catchall.test'), 'not its subdomains');
  t.notOk(recipientKnown(list, '', 'anyone@example.test'));
});

t.test('the domain is what follows the last @', async (t) => {
  t.ok(recipientKnown(new Set(['@example.test']), '', '"a@b"@example.test'));
  t.notOk(recipientKnown(new Set(['@b']), '', '"a@b"@example.test'));
});

t.test('not addresses: no match, even against a catch-all', async (t) => {
  t.notOk(recipientKnown(list, '+', ''));
  t.notOk(recipientKnown(list, '+', 'catchall.test'));
  t.notOk(recipientKnown(list, '+', '@catchall.test'), 'an entry itself is not an address');
});

t.test('an empty set knows nobody (the caller treats an empty list as no list)', async (t) => {
  t.notOk(recipientKnown(new Set(), '+', 'alice@example.test'));
});
