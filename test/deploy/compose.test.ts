// deploy/docker-compose.yml and deploy/Dockerfile, read as text: no Docker engine runs here.
// Guards what the issue (#17, item 8) asked: an image built from the one-file agent (no npm at
// boot), a user that is not root, a healthcheck, metrics for the host's loopback only, and no
// secret written into the files.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';

const read = (p: string): Promise<string> => readFile(new URL(`../../${p}`, import.meta.url), 'utf8');
const composeText = await read('deploy/docker-compose.yml');
const dockerfile = await read('deploy/Dockerfile');

interface Service {
  build?: { context: string; dockerfile: string };
  image?: string; command?: unknown; user?: string;
  environment?: Record<string, string>; secrets?: string[]; ports?: string[];
  healthcheck?: { test: string[] };
}
const compose = parse(composeText) as { services: Record<string, Service>; secrets: Record<string, { file?: string }> };
const agent = compose.services.agent;

t.test('the compose file is valid YAML with an agent built from deploy/Dockerfile', async (t) => {
  t.ok(agent, 'an agent service');
  t.same(agent?.build, { context: '..', dockerfile: 'deploy/Dockerfile' });
  t.equal(agent?.command, undefined, 'the image knows how to start');
  t.notMatch(JSON.stringify(compose), /\bnpm\b|node_modules/, 'nothing is installed or built at boot (comments aside)');
});

t.test('the image: the one-file agent, not root, a healthcheck of its own /healthz', async (t) => {
  const lines = dockerfile.split('\n').filter((l) => !l.startsWith('#'));
  t.ok(lines.some((l) => /^COPY dist\/mailbridge-agent /.test(l)), 'copies dist/mailbridge-agent');
  t.notMatch(lines.join('\n'), /\bnpm\b|\bnode\b /, 'no npm, no node');
  const user = lines.filter((l) => l.startsWith('USER ')).at(-1);
  t.ok(user && !/^USER (root|0)\b/.test(user), `runs as ${user ?? 'root'}`);
  t.match(dockerfile, /^HEALTHCHECK .*\n?.*--healthcheck", "http:\/\/127\.0\.0\.1:8025\/healthz"/m);
  t.same(agent?.healthcheck?.test, ['CMD', '/usr/local/bin/mailbridge-agent', '--healthcheck', 'http://127.0.0.1:8025/healthz']);
  const ignore = await read('.dockerignore');
  t.match(ignore, /^\*$/m, '.dockerignore sends nothing by default');
  t.match(ignore, /^!dist\/mailbridge-agent$/m, 'but the executable');
});

t.test('metrics reach the host on loopback only; the token comes from a secret file', async (t) => {
  t.same(agent?.ports, ['127.0.0.1:8025:8025']);
  for (const s of Object.values(compose.services)) {
    for (const p of s.ports ?? []) t.match(p, /^127\.0\.0\.1:/, `${p} is published on loopback`);
  }
  t.equal(agent?.environment?.MAILBRIDGE_TOKEN_FILE, '/run/secrets/agent_token');
  t.same(agent?.secrets, ['agent_token']);
  t.same(compose.secrets.agent_token, { file: './agent.token' });
  t.notMatch(composeText, /MAILBRIDGE_TOKEN:|PASSWORD|password\s*[:=]/i, 'no token or password in the file');
});
