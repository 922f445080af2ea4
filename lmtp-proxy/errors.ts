// Local (client-side) failures, as in nodemailer's lib/errors.js: one table of codes.
// They are values, not exceptions: the client turns them into per-recipient tempfail results.
// Only programmer errors (bad envelope, bad target) are thrown, as TypeError.

export const ERROR_CODES = {
  ECONNECTION: 'could not connect, or the connection was lost',
  ETIMEDOUT: 'the server did not answer in time',
  EPROTOCOL: 'the server broke the protocol',
  ESTREAM: 'the message body could not be read',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface LocalError {
  readonly code: ErrorCode;
  readonly stage: string;   // client state when it happened (GREETING, RCPT, DOT, ...)
  readonly detail: string;  // what happened, for the result text and logs
}

export function localError(code: ErrorCode, stage: string, detail: string): LocalError {
  return { code, stage, detail };
}

// Replies carry a numeric code and no detail, so 'detail' tells the two apart.
export function isLocalError<T extends object>(x: T | LocalError): x is LocalError {
  return 'detail' in x && typeof x.code === 'string';
}

/** The text of a local-failure result, e.g. 'ETIMEDOUT: no reply to DATA within 180000 ms'. */
export function errorText(e: LocalError): string {
  return `${e.code}: ${e.detail}`;
}
