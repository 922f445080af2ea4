// The recipients list's tables: the parts an agent sends (recipient_staging) and the list in
// force (recipient_parts), swapped in one commit once every part is here.
import type { RecipientsFrame } from '../protocol/wire.ts';

/** The recipients list in force: entries are lowercase addresses and '@domain's. */
export interface RecipientList { digest: string; delimiter: string; entries: string[] }

/** Its tables: recipient_staging (parts on their way) and recipient_parts (the list in force). */
export class RecipientListStore {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  /**
   * Stores one part of a list connection `session` publishes; a part of another list (or
   * another part count) drops the parts it sent before. Once every part is here, that list
   * replaces the one in force in this one commit (an empty list removes it). Returns the list
   * when it changed.
   */
  putRecipientPart(session: string, f: RecipientsFrame, now: number): RecipientList | null | 'incomplete' {
    this.#sql.exec(`DELETE FROM recipient_staging WHERE session = ? AND (digest != ? OR parts != ?)`, session, f.digest, f.parts);
    this.#sql.exec(
      `INSERT OR REPLACE INTO recipient_staging (session, digest, part, parts, delimiter, entries, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      session, f.digest, f.part, f.parts, f.delimiter, JSON.stringify(f.entries), now,
    );
    const have = Number(this.#sql.exec(`SELECT COUNT(*) AS n FROM recipient_staging WHERE session = ?`, session).one().n);
    if (have < f.parts) return 'incomplete';
    this.#sql.exec(`DELETE FROM recipient_parts`);
    this.#sql.exec(
      `INSERT INTO recipient_parts (digest, part, parts, delimiter, entries, received_at)
       SELECT digest, part, parts, delimiter, entries, received_at FROM recipient_staging WHERE session = ?`, session,
    );
    this.#sql.exec(`DELETE FROM recipient_staging WHERE session = ?`, session);
    const list = this.recipients();
    if (list === null) this.#sql.exec(`DELETE FROM recipient_parts`);
    return list;
  }

  /** Parts of a list this connection never finished: dropped with it (prune() drops those an eviction left). */
  dropRecipientParts(session: string): void {
    this.#sql.exec(`DELETE FROM recipient_staging WHERE session = ?`, session);
  }

  /** The list in force, or null when none is (never published, or published empty). */
  recipients(): RecipientList | null {
    const rows = this.#sql.exec(`SELECT digest, parts, delimiter, entries FROM recipient_parts ORDER BY part`).toArray();
    const first = rows[0];
    if (!first || rows.length !== Number(first.parts)) return null;
    const entries = rows.flatMap((r) => JSON.parse(String(r.entries)) as string[]);
    return entries.length === 0 ? null : { digest: String(first.digest), delimiter: String(first.delimiter), entries };
  }

  /** Digest of the list in force, cheaply (to tell whether a cached copy is still current). */
  recipientsDigest(): string | null {
    const r = this.#sql.exec(`SELECT digest, parts, COUNT(*) AS n FROM recipient_parts GROUP BY digest`).toArray();
    const only = r.length === 1 ? r[0] : undefined;
    return only && Number(only.n) === Number(only.parts) ? String(only.digest) : null;
  }
}
