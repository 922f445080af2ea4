#!/usr/bin/env node
// relayctl: `npx relayctl …`, `npm run relayctl -- …` or `node relayctl/main.ts …`.
// Usage: relayctl --help; docs/operations.md, "relayctl".
import { main } from './cli.ts';

process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // The reader went away (relayctl queue | head): nothing more to say.
  if (err.code !== 'EPIPE') process.stderr.write(`relayctl: cannot write to stdout: ${err.message}\n`);
  process.exit(1);
});

process.exitCode = await main(process.argv.slice(2), { env: process.env, cwd: process.cwd(), stdout: process.stdout, stderr: process.stderr });
