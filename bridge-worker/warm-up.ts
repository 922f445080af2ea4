// A fresh isolate compiles each function (and regular expression) the first time it runs, and
// on the Free plan that time counts against the first message's 10 ms of CPU (issue #15,
// docs/performance.md). The module's top level runs at startup instead, under the separate
// startup limit (1 s). So the pure functions every message passes through run once here, on a
// message shaped like Email Routing's, and the first real one finds them compiled. Nothing
// here does I/O, reads the clock's value or draws random bytes (none is allowed at startup).
import { isAddress } from '../protocol/wire.ts';
import { levelOf } from '../protocol/log-levels.ts';
import { blockVerdicts } from './cf-auth-results.ts';
import { cloudflareBlockLength } from './cloudflare-block.ts';
import { parseConfig } from './config.ts';
import { headerSection } from './headers.ts';
import { hex } from './log.ts';
import { shardOf } from './shard-hash.ts';

/** Email Routing's block (docs/reference §10) above a sender's header section and body. */
export const SAMPLE = new TextEncoder().encode([
  'Received: from mail.example.org (192.0.2.1)',
  '        by cloudflare-email.com (unknown) id warmup0000',
  '        for <alice@example.net>; Wed, 02 Dec 2026 00:00:00 +0000',
  'ARC-Seal: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; cv=none; b=AAAA',
  'ARC-Message-Signature: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; c=relaxed/relaxed; h=From; bh=AAAA; b=AAAA',
  'ARC-Authentication-Results: i=1; mx.cloudflare.net; dkim=pass header.d=example.org; dmarc=pass header.from=example.org; spf=pass smtp.mailfrom=bob@example.org; arc=none',
  'Received-SPF: pass (mx.cloudflare.net: domain of bob@example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1;',
  'Authentication-Results: mx.cloudflare.net; dkim=pass header.d=example.org; dmarc=pass header.from=example.org; spf=pass smtp.mailfrom=bob@example.org',
  'From: <bob@example.org>',
  'To: <alice@example.net>',
  'Subject: warm-up',
  '',
  'body',
  '',
].join('\r\n'));

/** Runs the per-message pure code once; returns what it found, for the test that it really parsed. */
export function warmUp(): { block: number; header: number; dkim: string; shard: number } {
  parseConfig({});
  const block = cloudflareBlockLength(SAMPLE, true);
  const header = headerSection(SAMPLE.subarray(block)).byteLength;
  const verdicts = blockVerdicts(SAMPLE.subarray(0, block));
  isAddress('bob@example.org', true);
  levelOf('email.accepted');
  hex(new ArrayBuffer(16));
  // Date formatting sets up the isolate's time zone cache on first use (the R2 binding's put does).
  new Date(0).toISOString();
  return { block, header, dkim: verdicts.dkim, shard: shardOf('alice@example.net', 1) };
}

warmUp();
