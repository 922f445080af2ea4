// Structured logs: one JSON line per event. Message content is never logged.
export type Logger = (event: string, fields?: Record<string, unknown>) => void;

export const jsonLogger = (write: (line: string) => void = (l) => process.stdout.write(l + '\n')): Logger =>
  (event, fields = {}) => write(JSON.stringify({ ts: new Date().toISOString(), event, ...fields }));

export const silentLogger: Logger = () => {};
