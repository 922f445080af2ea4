// Log lines carry text from outside (a Subject, envelope addresses, a target's reply): none of
// it may reach a terminal or the journal as a control. C0 and DEL, C1 (which some terminals read
// as escapes: U+009B is CSI) and U+2028/2029 (line breaks to JavaScript and some viewers) are
// written as escapes in every field of both log forms; everything else stays as it is.

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
// What JSON.stringify leaves raw: it already escapes C0.
const JSON_RAW = /[\u007f-\u009f\u2028\u2029]/g;

const u = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** True when `s` holds a character the log escapes. */
export function hasControl(s: string): boolean {
  return CONTROL.test(s);
}

/** JSON.stringify, with DEL, C1 and U+2028/2029 escaped too: still JSON, parsed to the same value. */
export function logJson(v: unknown): string {
  return JSON.stringify(v).replace(JSON_RAW, u);
}

/**
 * Text for an unquoted place of a line (maillog's `from=<...>`, `(reply)`): each control as
 * `\uXXXX`, and a backslash doubled so that an escape cannot be forged by the text itself.
 */
export function logText(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(CONTROLS, u);
}
