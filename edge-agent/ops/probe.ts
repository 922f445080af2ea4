// Is the LMTP target answering? One short session: the greeting (220), LHLO
// (EHLO for smtp://) answered 250, QUIT. Used for /healthz when no delivery
// has talked to the target lately. No mail transaction, so nothing is stored.
import net from 'node:net';
import { formatTarget, type Target } from '../../lmtp-proxy/target.ts';

/** Resolves when the target greeted and answered LHLO; rejects with why not. */
export function probeTarget(target: Target, localName: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const where = formatTarget(target);
    const socket = 'path' in target ? net.connect(target.path) : net.connect(target.port, target.host);
    let buffer = '';
    let step: 'greeting' | 'hello' | 'done' = 'greeting';
    const finish = (err: Error | null): void => {
      if (step === 'done') return;
      step = 'done';
      clearTimeout(timer);
      if (err) socket.destroy();
      else socket.end('QUIT\r\n');
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`${where}: no answer within ${timeoutMs} ms (${step})`)), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('error', (e) => finish(new Error(`${where}: ${e.message}`)));
    socket.on('close', () => finish(new Error(`${where}: connection closed during ${step}`)));
    socket.on('data', (text: string) => {
      buffer += text;
      if (buffer.length > 64 * 1024) return finish(new Error(`${where}: reply too long`));
      let eol: number;
      while ((eol = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, eol).replace(/\r$/, '');
        buffer = buffer.slice(eol + 1);
        if (line.length > 3 && line[3] === '-') continue;  // continuation of a multi-line reply
        const code = Number(line.slice(0, 3));
        if (step === 'greeting') {
          if (code !== 220) return finish(new Error(`${where}: greeting ${line}`));
          step = 'hello';
          socket.write(`${target.protocol === 'smtp' ? 'EHLO' : 'LHLO'} ${localName}\r\n`);
        } else if (step === 'hello') {
          if (code !== 250) return finish(new Error(`${where}: LHLO answered ${line}`));
          return finish(null);
        }
      }
    });
  });
}
