// R2 in a process of its own, as on Cloudflare, where R2 is a separate service and the bytes
// it stores, hashes and serves cost the Worker's isolate nothing. Miniflare runs its R2
// simulator (JS that parses and hashes every byte) inside the same workerd as the Worker, on
// the same thread, so a CPU measurement of that thread counts R2's work as the Worker's. The
// bench (bench/cloud.ts) instead starts a second Miniflare that hosts the bucket, and binds the
// Worker's BODIES to it over HTTP: the Worker's R2 calls then leave its process as they do on
// the edge. Tests and `npm start` keep the simpler in-process bucket.
//
// Two pieces: a Miniflare external plugin (`plugins`, loaded by Miniflare from this file)
// that can bind an R2 name to an external address, or a service binding to a service by name;
// and startR2Host(), the second Miniflare, whose one Worker hands every request to its
// simulator bucket unchanged (the R2 binding's own HTTP protocol).
import { Miniflare } from 'miniflare';
import { fileURLToPath } from 'node:url';

/** How a Worker's options name this plugin (Miniflare `unsafeBindings[].plugin`). */
export const R2_REMOTE_PLUGIN = { name: 'mailbridge-r2-remote', package: fileURLToPath(import.meta.url) };

interface PluginBinding { name: string; type: string; options: Record<string, unknown> }
type Designated = { name: string; r2Bucket: { name: string } } | { name: string; service: { name: string } };

const remoteService = (binding: string): string => `mailbridge-r2-remote:${binding}`;
const list = (opts: unknown): PluginBinding[] => (Array.isArray(opts) ? opts as PluginBinding[] : []);

export const plugins = {
  [R2_REMOTE_PLUGIN.name]: {
    getBindings(opts: unknown): Designated[] {
      return list(opts).map((b) => (b.type === 'r2-remote'
        ? { name: b.name, r2Bucket: { name: remoteService(b.name) } }
        : { name: b.name, service: { name: String(b.options.service) } }));
    },
    getNodeBindings(): Record<string, never> { return {}; },
    getServices({ options }: { options: unknown }): { name: string; external: { address: string; http: Record<string, never> } }[] {
      return list(options).filter((b) => b.type === 'r2-remote')
        .map((b) => ({ name: remoteService(b.name), external: { address: String(b.options.address), http: {} } }));
    },
  },
};

/** The Miniflare `unsafeBindings` entry that binds `name` to the R2 host at `address` (host:port). */
export function r2RemoteBinding(name: string, address: string): PluginBinding & { plugin: typeof R2_REMOTE_PLUGIN } {
  return { name, type: 'r2-remote', plugin: R2_REMOTE_PLUGIN, options: { address } };
}

export interface R2Host {
  address: string;
  /** The bucket itself, for tests that look into it or put what no Worker put. */
  bucket(): ReturnType<Miniflare['getR2Bucket']>;
  dispose(): Promise<void>;
}

/** A second workerd process hosting one simulated R2 bucket, persisted under `persistDir` (`port`: 0, any). */
export async function startR2Host(persistDir: string, port = 0): Promise<R2Host> {
  const bucket = 'bodies';
  const mf = new Miniflare({
    name: 'r2-host', modules: true, compatibilityDate: '2026-04-01', host: '127.0.0.1', port,
    r2Buckets: { BUCKET: bucket }, r2Persist: persistDir,
    // Miniflare names the simulator's service r2:bucket:<id>; a plain service binding reaches it.
    unsafeBindings: [{ name: 'SIMULATOR', type: 'service', plugin: R2_REMOTE_PLUGIN, options: { service: `r2:bucket:${bucket}` } }],
    script: 'export default { fetch(request, env) { return env.SIMULATOR.fetch(request); } };',
  });
  const url = await mf.ready;
  return { address: url.host, bucket: () => mf.getR2Bucket('BUCKET'), dispose: () => mf.dispose() };
}
