// `npm run soak [-- --messages N --seed S --max-bytes B --fault-every-ms M --operator-every-ms O]`:
// the long soak. Prints the summary table and its one-line summary (delivered / refused at SMTP /
// bounced / dead-lettered / deleted by the operator / lost, duplicates; R2 and operator counts);
// exits 1 on any loss, unexplained duplicate or mismatch, or an operator action answered wrongly.
import { parseArgs } from 'node:util';
import { formatSummary, runSoak } from './soak.ts';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000' },
    seed: { type: 'string', default: String(Date.now() % 100_000) },
    'max-bytes': { type: 'string', default: String(5 * 1024 * 1024) },
    'fault-every-ms': { type: 'string', default: '3000' },
    'operator-every-ms': { type: 'string', default: '1500' },
    senders: { type: 'string', default: '8' },
    'time-limit-s': { type: 'string', default: '1800' },
  },
});
const num = (k: keyof typeof values): number => {
  const n = Number(values[k]);
  if (!Number.isInteger(n) || n < (k === 'operator-every-ms' ? 0 : 1)) {
    process.stderr.write(`soak: --${k} must be a ${k === 'operator-every-ms' ? 'whole number (0: no operator)' : 'positive integer'}\n`);
    process.exit(2);
  }
  return n;
};
const s = await runSoak({
  messages: num('messages'), seed: num('seed'), maxBytes: num('max-bytes'), faultEveryMs: num('fault-every-ms'),
  operatorEveryMs: num('operator-every-ms'),
  senders: num('senders'), timeLimitMs: num('time-limit-s') * 1000,
  log: (l) => process.stdout.write(`${new Date().toISOString()} ${l}\n`),
});
process.stdout.write(`\n${formatSummary(s)}\n`);
process.exit(s.ok ? 0 : 1);
