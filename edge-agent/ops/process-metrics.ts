// The agent process's own numbers for GET /metrics, under the names prom-client's
// default metrics use (so stock Node dashboards work): memory, CPU time, event-loop delay.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Sampled, type Registry } from './prom.ts';

const NS = 1e9;

/** Adds the process metrics to `r`; returns the function that stops the event-loop monitor. */
export function addProcessMetrics(r: Registry): () => void {
  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  const startedAt = Date.now() / 1000 - process.uptime();
  const g = (name: string, help: string, read: () => number) => r.add(new Sampled(name, help, 'gauge', null, read));
  const c = (name: string, help: string, read: () => number) => r.add(new Sampled(name, help, 'counter', null, read));
  c('process_cpu_user_seconds_total', 'User CPU time spent, seconds', () => process.cpuUsage().user / 1e6);
  c('process_cpu_system_seconds_total', 'System CPU time spent, seconds', () => process.cpuUsage().system / 1e6);
  g('process_resident_memory_bytes', 'Resident memory size, bytes', () => process.memoryUsage.rss());
  g('process_start_time_seconds', 'When the process started, seconds since the epoch', () => Math.round(startedAt));
  g('nodejs_heap_size_total_bytes', 'V8 heap size, bytes', () => process.memoryUsage().heapTotal);
  g('nodejs_heap_size_used_bytes', 'V8 heap used, bytes', () => process.memoryUsage().heapUsed);
  g('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript (Buffers), bytes', () => process.memoryUsage().external);
  // Since the last scrape: each scrape reads, then resets the histogram (as prom-client does).
  // Read in this order, the reset comes last: it is in the p99 gauge, the last one registered.
  const sec = (n: number) => (Number.isFinite(n) ? n / NS : 0);
  g('nodejs_eventloop_lag_mean_seconds', 'Mean event-loop delay since the last scrape, seconds', () => sec(loop.mean));
  g('nodejs_eventloop_lag_max_seconds', 'Largest event-loop delay since the last scrape, seconds', () => sec(loop.max));
  g('nodejs_eventloop_lag_p99_seconds', '99th percentile of the event-loop delay since the last scrape, seconds', () => {
    const v = sec(loop.percentile(99));
    loop.reset();
    return v;
  });
  return () => loop.disable();
}
