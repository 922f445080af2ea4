// Real-shaped `message.raw` starts (docs/reference §10): the block Email Routing writes on
// each delivery attempt, then the sender's own message. Shapes from the public samples
// (willswire/octomailer #1 and #3, June 2024; later samples with Received-SPF,
// Authentication-Results and X-CF-* fields; cloudflare/workerd#6740 with no verdicts of
// Cloudflare's own), plus the odd senders the parser must not eat into: a message that
// starts with its own Received: or ARC set. Signature values are made up (base64 of the
// right length); names, order and folding follow the samples.
//
// `block` is Cloudflare's part, `message` the sender's; `strip` says whether the Worker
// must find the block (false: it must strip nothing, the key then covers every byte).

export interface CloudflareSample {
  name: string;
  block: string;
  message: string;
  strip: boolean;
}

const b64 = (n: number, seed: string): string => {
  let s = '';
  while (s.length < n) s += Buffer.from(`${seed}:${s.length}`).toString('base64').replace(/=+$/, '');
  return s.slice(0, n);
};

const SENDER = 'From: Someone <someone@icloud.example>\r\nTo: octomailer@example.test\r\nSubject: hello\r\n' +
  'Date: Sat, 1 Jun 2024 17:12:05 +0000\r\nMessage-ID: <A1B2C3@icloud.example>\r\nMIME-Version: 1.0\r\n' +
  'Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n';

const RECEIVED_2024 = 'Received: from ms11p00im-hyfv17281201.me.com (17.58.38.39)\r\n' +
  '        by cloudflare-email.com (unknown) id 6WR6w7NQBx1U\r\n' +
  '        for <octomailer@example.test>; Sat, 01 Jun 2024 17:12:10 +0000\r\n';
const ARC_2024 = `ARC-Seal: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; cv=none;\r\n\tb=${b64(70, 'seal')}\r\n\t${b64(76, 'seal2')}\r\n\t${b64(76, 'seal3')}\r\n` +
  'ARC-Message-Signature: i=1; a=rsa-sha256; s=2023; d=cloudflare-email.com; c=relaxed/relaxed;\r\n' +
  '\th=To:Date:Subject:From:reply-to:cc:resent-date:resent-from:resent-to\r\n' +
  '\t :resent-cc:in-reply-to:references:list-id:list-help:list-unsubscribe\r\n' +
  `\t :list-subscribe:list-post:list-owner:list-archive; t=1717261930;\r\n\tx=1717866730; bh=${b64(44, 'bh')};\r\n\tb=${b64(70, 'ams')}\r\n\t${b64(76, 'ams2')}\r\n`;
const AAR_2024 = 'ARC-Authentication-Results: i=1; mx.cloudflare.net;\r\n\tdkim=pass header.d=icloud.example header.s=1a1hai header.b=abcdEFGH;\r\n' +
  '\tdmarc=pass header.from=icloud.example policy.dmarc=quarantine;\r\n' +
  '\tspf=pass (mx.cloudflare.net: domain of someone@icloud.example designates 17.58.38.39 as permitted sender) smtp.mailfrom=someone@icloud.example\r\n';
const SPF = 'Received-SPF: pass (mx.cloudflare.net: domain of someone@icloud.example designates 17.58.38.39 as permitted sender)\r\n' +
  '\treceiver=mx.cloudflare.net; client-ip=17.58.38.39; envelope-from="someone@icloud.example"; helo=ms11p00im-hyfv17281201.me.com;\r\n';
const AR = 'Authentication-Results: mx.cloudflare.net;\r\n\tdkim=pass header.d=icloud.example header.s=1a1hai header.b=abcdEFGH;\r\n' +
  '\tdmarc=pass header.from=icloud.example policy.dmarc=quarantine;\r\n\tspf=pass smtp.mailfrom=someone@icloud.example\r\n';
const XCF = 'X-CF-Spamh-Score: 2\r\nX-CF-Spamh-Score-Threshold: 5\r\n';

export const CLOUDFLARE_SAMPLES: readonly CloudflareSample[] = [
  { name: '2024 shape: Received, ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results', block: RECEIVED_2024 + ARC_2024 + AAR_2024, message: SENDER, strip: true },
  { name: 'recent shape: with Received-SPF, Authentication-Results and X-CF-* fields', block: RECEIVED_2024 + ARC_2024 + AAR_2024 + SPF + AR + XCF, message: SENDER, strip: true },
  {
    name: 'a Received on one line, no verdicts of its own (workerd#6740): the forwarder\'s ARC results are the sender\'s',
    block: 'Received: from mail-wr1-f54.google.example (209.85.221.54) by cloudflare-email.com (unknown) id wisoIZsPQe2t for <octomailer@example.test>; Sat, 01 Jun 2024 17:19:44 +0000\r\n' + ARC_2024,
    message: 'ARC-Authentication-Results: i=1; mx.google.com; arc=none\r\n' + SENDER,
    strip: true,
  },
  // A block with no verdicts of its own (workerd#6740): what a sender writes below it under
  // Cloudflare's names is the sender's (it fills no verdict and stays in the dedupe key).
  {
    name: 'no verdicts of Cloudflare\'s, then a sender\'s own Authentication-Results: mx.cloudflare.net: the sender\'s',
    block: RECEIVED_2024 + ARC_2024,
    message: 'Authentication-Results: mx.cloudflare.net; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example; spf=pass\r\n' + SENDER,
    strip: true,
  },
  { name: 'no verdicts of Cloudflare\'s, then a sender\'s own Received-SPF and X-CF-*: the sender\'s', block: RECEIVED_2024 + ARC_2024, message: SPF + XCF + AR + SENDER, strip: true },
  { name: 'no ARC set at all, then a sender\'s own X-CF-* and Authentication-Results: the sender\'s', block: RECEIVED_2024, message: XCF + AR + SENDER, strip: true },
  {
    name: 'a sender whose message starts with its own Received: (its MTA\'s trace)',
    block: RECEIVED_2024 + ARC_2024 + AAR_2024,
    message: 'Received: from [192.0.2.7] by smtp.icloud.example with ESMTPSA id 12345\r\n\tfor <octomailer@example.test>; Sat, 01 Jun 2024 17:12:06 +0000\r\n' + SENDER,
    strip: true,
  },
  {
    name: 'a sender whose message starts with an ARC set of its own (a forwarder\'s, i=1, d=google)',
    block: RECEIVED_2024 + ARC_2024 + AAR_2024 + SPF,
    message: `ARC-Seal: i=1; a=rsa-sha256; t=1717261920; cv=none; d=google.example; s=arc-20160816;\r\n\tb=${b64(70, 'gseal')}\r\n` +
      `ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=google.example; s=arc-20160816;\r\n\th=to:subject:from; bh=${b64(44, 'gbh')};\r\n\tb=${b64(70, 'gams')}\r\n` +
      'ARC-Authentication-Results: i=1; mx.google.example; arc=none\r\n' + SENDER,
    strip: true,
  },
  {
    name: 'a message once forwarded through Email Routing: the second Cloudflare Received is the sender\'s',
    block: RECEIVED_2024 + AAR_2024,
    message: RECEIVED_2024.replace('6WR6w7NQBx1U', 'oldIdOldId12') + SENDER,
    strip: true,
  },
  { name: 'a block and then a message with no header fields at all', block: RECEIVED_2024 + ARC_2024, message: '\r\nbody only\r\n', strip: true },
  { name: 'no Cloudflare Received first: nothing is stripped', block: '', message: 'Received: from mx.example by mx2.example; Sat, 01 Jun 2024 17:12:10 +0000\r\n' + SENDER, strip: false },
  { name: 'a block written with bare LF: not Cloudflare\'s writing, nothing is stripped', block: '', message: (RECEIVED_2024 + AAR_2024).replace(/\r\n/g, '\n') + SENDER, strip: false },
  { name: 'a block whose end is past the bounded scan: nothing is stripped', block: '', message: RECEIVED_2024 + AAR_2024 + `X-CF-Long: ${'a'.repeat(9000)}\r\n` + SENDER, strip: false },
  { name: 'an empty message', block: '', message: '', strip: false },
];
