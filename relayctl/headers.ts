// Header values for `show`, decoded by mailparser. The admin API already unfolds the
// fields and shows 8-bit bytes as UTF-8 (U+FFFD where not valid UTF-8). mailparser then
// decodes RFC 2047 encoded words (=?iso-8859-1?Q?Andr=E9?=) and their charsets. It does
// that only for the fields it knows (Subject, the address fields, Message-ID), and keeps
// only the first of a repeated one; so each field is handed to it on its own, as the
// text of a Subject, and the order, the original names and repeated fields (Received)
// stay exactly as the message has them. Display only: nothing decoded goes back into mail.
import type { HeaderField } from '../protocol/admin.ts';

const OPTIONS = { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, skipTextLinks: true, checksumAlgo: false } as const;

export async function decodeHeaders(fields: HeaderField[]): Promise<HeaderField[]> {
  if (fields.length === 0) return [];
  // Loaded here, not at the top: the other commands start faster without it.
  const { simpleParser } = await import('mailparser');
  return Promise.all(fields.map(async (f) => {
    try {
      const parsed = await simpleParser(Buffer.from(`Subject: ${f.value.replace(/[\r\n]+/g, ' ')}\r\n\r\n`, 'utf8'), OPTIONS);
      return { name: f.name, value: parsed.subject ?? f.value };
    } catch {
      return f; // the API's value is still right, just not decoded
    }
  }));
}
