// The agent's local HTTP server (127.0.0.1:8025 by default): GET /healthz and
// GET /metrics, nothing else. No authentication, so it should stay on loopback;
// it never shows message content or addresses.
import { createServer, type Server } from 'node:http';
import type { Health } from '../agent.ts';
import type { Logger } from './log.ts';
import { CONTENT_TYPE } from './prom.ts';
import type { Listen } from '../daemon-settings.ts';

export interface HttpSources {
  health(): Health;
  metrics(): string;
  /** Awaited before metrics() on each scrape (the queue's numbers); bounded by its own timeout. */
  refresh?(): Promise<void>;
}

export interface HttpServer {
  /** The bound port (the configured one, or the one picked for port 0). */
  port: number;
  close(): Promise<void>;
}

export function startHttpServer(listen: Listen, src: HttpSources, log: Logger): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      const h = src.health();
      // 503 with the reasons, so a monitor (or a person with curl) sees why.
      res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify({ ok: h.ok, session: h.session, target: h.target, reasons: h.reasons }) + '\n');
      return;
    }
    if (path === '/metrics') {
      const send = (): void => {
        res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'Cache-Control': 'no-store' });
        res.end(src.metrics());
      };
      if (!src.refresh) return send();
      src.refresh().then(send, send);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: try /healthz or /metrics\n');
  });
  // Scrapes are tiny; a client that holds a connection open must not keep the agent from stopping.
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 1_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      server.on('error', (err) => log('http.error', { error: err.message }));
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : listen.port;
      log('http.listening', { host: listen.host, port });
      resolve({
        port,
        close: () => new Promise((r) => {
          server.close(() => r());
          server.closeAllConnections();
        }),
      });
    });
  });
}
