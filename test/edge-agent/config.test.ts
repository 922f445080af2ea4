// The daemon's settings: a JSON file with MAILBRIDGE_* overrides, every key
// checked at start. A bad one stops the process with exit code 2 and a message
// that names the key where it was set (the file's key or the variable).
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultReportingMta } from '../../edge-agent/agent-config.ts';
import { DEFAULT_CONFIG_PATH, loadSettings } from '../../edge-agent/daemon-settings.ts';
import { runAgent } from './agent-process.ts';

const TOKEN = 'file-token-0123456789abcdef';
const ENV_TOKEN = 'env-token-0123456789abcdef';
const URL = 'wss://relay.example.workers.dev/agent';

/** A fresh dir with a token file and an agent.json holding `cfg` (tokenFile added unless given). */
function configDir(t: Test, cfg: Record<string, unknown> | string): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mailbridge-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  const file = join(dir, 'agent.json');
  writeFileSync(file, typeof cfg === 'string' ? cfg : JSON.stringify({ workerUrl: URL, tokenFile: join(dir, 'token'), ...cfg }));
  return { dir, file };
}

t.test('a complete file, read as written', async (t) => {
  const { file } = configDir(t, {
    target: 'lmtp://127.0.0.1:24', stateDir: '/srv/mailbridge', name: 'dell', concurrency: 8, creditBytes: 4 << 20,
    heartbeatMs: 5000, maxReconnectMs: 30_000, http: '[::1]:9100', logSubject: true,
    journalRetentionDays: 14, stopGraceMs: 10_000, shards: 4,
    recipientsFile: '/etc/mailbridge/recipients', recipientDelimiter: '+', bounceRelay: 'smtp://127.0.0.1:25', reportingMta: 'mx.example.com',
    authservId: 'home.example.com', logFormat: 'maillog', traceHeader: true, doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'doveadm-key',
  });
  t.same(loadSettings(file, {}), {
    agent: {
      workerUrl: URL, token: TOKEN, target: 'lmtp://127.0.0.1:24', name: 'dell', concurrency: 8, creditBytes: 4 << 20,
      heartbeatMs: 5000, traceHeader: true, maxReconnectMs: 30_000, shards: 4,
      recipientsFile: '/etc/mailbridge/recipients', recipientDelimiter: '+', bounceRelay: 'smtp://127.0.0.1:25', reportingMta: 'mx.example.com',
      authservId: 'home.example.com', statusToken: null, doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'doveadm-key',
    },
    stateDir: '/srv/mailbridge', http: { host: '::1', port: 9100 }, logSubject: true, logFormat: 'maillog', journalRetentionDays: 14,
    stopGraceMs: 10_000, file,
  });
});

t.test('defaults for what the file leaves out', async (t) => {
  const { file } = configDir(t, {});
  t.match(loadSettings(file, {}), {
    agent: { target: 'lmtp+unix:/var/run/dovecot/lmtp', name: 'edge-agent', concurrency: 16, heartbeatMs: 10_000, traceHeader: true },
    stateDir: '/var/lib/mailbridge', http: { host: '127.0.0.1', port: 8025 }, logSubject: false, logFormat: 'json', journalRetentionDays: 7, stopGraceMs: 20_000,
  });
  // No list, no delimiter, no bounces; the DSN names this host.
  t.match(loadSettings(file, {}).agent, { recipientsFile: null, recipientDelimiter: '', bounceRelay: null, reportingMta: defaultReportingMta(), authservId: defaultReportingMta() });
});

t.test('the status token: from the file, its own file, or the environment; never the agent token', async (t) => {
  const { dir, file } = configDir(t, { statusToken: 'status-token-0123456789' });
  t.equal(loadSettings(file, {}).agent.statusToken, 'status-token-0123456789');
  writeFileSync(join(dir, 'status'), 'status-from-file-0123456789\n');
  t.equal(loadSettings(file, { MAILBRIDGE_STATUS_TOKEN_FILE: join(dir, 'status') }).agent.statusToken, 'status-from-file-0123456789', 'the environment\'s file replaces the file\'s token');
  t.throws(() => loadSettings(file, { MAILBRIDGE_STATUS_TOKEN: 'short' }), { message: 'MAILBRIDGE_STATUS_TOKEN: must be at least 16 printable characters' });
  t.throws(() => loadSettings(file, { MAILBRIDGE_STATUS_TOKEN: TOKEN }), { message: /^MAILBRIDGE_STATUS_TOKEN: must be the Worker's STATUS_TOKEN, not the agent token/ });
  t.equal(loadSettings(configDir(t, {}).file, {}).agent.statusToken, null, 'unset: none');
});

t.test('the doveadm check: the URL and Dovecot\'s API key (its file, the environment\'s first); off when unset', async (t) => {
  const { dir, file } = configDir(t, { doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'key-in-the-file' });
  t.match(loadSettings(file, {}).agent, { doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'key-in-the-file' });
  writeFileSync(join(dir, 'doveadm.key'), 'key-from-its-file\n');
  t.match(loadSettings(file, { MAILBRIDGE_DOVEADM_API_KEY_FILE: join(dir, 'doveadm.key') }).agent, { doveadmApiKey: 'key-from-its-file' },
    "the environment's file replaces the file's key, its line end cut");
  t.match(loadSettings(configDir(t, { doveadmUrl: 'https://mail.home:8080/', doveadmApiKeyFile: join(dir, 'doveadm.key') }).file, {}).agent,
    { doveadmUrl: 'https://mail.home:8080/', doveadmApiKey: 'key-from-its-file' });
  t.match(loadSettings(configDir(t, {}).file, {}).agent, { doveadmUrl: null, doveadmApiKey: null }, 'unset: off');
  const fails: [Record<string, unknown>, Record<string, string>, RegExp][] = [
    [{}, { MAILBRIDGE_DOVEADM_URL: 'unix:/run/dovecot/doveadm-server' }, /^MAILBRIDGE_DOVEADM_URL: must start with http:\/\/ or https:\/\//],
    [{}, { MAILBRIDGE_DOVEADM_URL: '127.0.0.1:8080' }, /^MAILBRIDGE_DOVEADM_URL: not a URL/],
    [{ doveadmUrl: 'http://127.0.0.1:8080/doveadm/v1', doveadmApiKey: 'k' }, {}, /agent\.json: doveadmUrl: the base URL only, without \/doveadm\/v1, e\.g\. http:\/\/127\.0\.0\.1:8080$/],
    [{ doveadmUrl: 'http://doveadm:key@127.0.0.1:8080', doveadmApiKey: 'k' }, {}, /agent\.json: doveadmUrl: no query, fragment or credentials/],
    [{}, { MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080' }, /^MAILBRIDGE_DOVEADM_URL: needs the API key too: doveadmApiKeyFile/],
    [{}, { MAILBRIDGE_DOVEADM_API_KEY: 'k' }, /^MAILBRIDGE_DOVEADM_API_KEY: set doveadmUrl too/],
    [{ doveadmApiKeyFile: '/nonexistent/key' }, { MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080' }, /agent\.json: doveadmApiKeyFile: cannot read \/nonexistent\/key/],
    [{ doveadmApiKeyFile: 'doveadm.key' }, {}, /agent\.json: doveadmApiKeyFile: must be an absolute path/],
    [{ doveadmApiKeyFile: '/etc/k', doveadmApiKey: 'k' }, {}, /agent\.json: doveadmApiKeyFile: set doveadmApiKeyFile or doveadmApiKey, not both/],
    [{}, { MAILBRIDGE_DOVEADM_API_KEY: 'k', MAILBRIDGE_DOVEADM_API_KEY_FILE: '/etc/k' }, /^MAILBRIDGE_DOVEADM_API_KEY_FILE: set MAILBRIDGE_DOVEADM_API_KEY_FILE or MAILBRIDGE_DOVEADM_API_KEY, not both/],
    [{ doveadmApiKey: 'a\tb' }, { MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080' }, /agent\.json: doveadmApiKey: must be Dovecot's doveadm_api_key/],
    // The check needs Dovecot's LMTP and the trace header it searches for.
    [{ target: 'smtp://127.0.0.1:25', doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'k' }, {}, /agent\.json: doveadmUrl: only for an LMTP target \(Dovecot\), not smtp:\/\//],
    [{ traceHeader: false }, { MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080', MAILBRIDGE_DOVEADM_API_KEY: 'k' }, /^MAILBRIDGE_DOVEADM_URL: needs traceHeader/],
  ];
  for (const [cfg, env, message] of fails) {
    t.throws(() => loadSettings(configDir(t, cfg).file, env), { name: 'ConfigError', message }, JSON.stringify([cfg, env]));
  }
});

t.test('MAILBRIDGE_LOG_FORMAT: json or maillog, anything else named', async (t) => {
  const { file } = configDir(t, {});
  t.equal(loadSettings(file, { MAILBRIDGE_LOG_FORMAT: 'maillog' }).logFormat, 'maillog');
  t.throws(() => loadSettings(file, { MAILBRIDGE_LOG_FORMAT: 'syslog' }), { message: 'MAILBRIDGE_LOG_FORMAT: must be json or maillog, got "syslog"' });
});

t.test('the recipients and bounce settings from the environment', async (t) => {
  const { file } = configDir(t, { recipientDelimiter: '-' });
  t.match(loadSettings(file, {
    MAILBRIDGE_RECIPIENTS_FILE: '/srv/recipients', MAILBRIDGE_RECIPIENT_DELIMITER: '+',
    MAILBRIDGE_BOUNCE_RELAY: 'smtp://[::1]:2525', MAILBRIDGE_REPORTING_MTA: 'home.example.org',
  }).agent, { recipientsFile: '/srv/recipients', recipientDelimiter: '+', bounceRelay: 'smtp://[::1]:2525', reportingMta: 'home.example.org' });
});

t.test('the environment wins over the file, key by key', async (t) => {
  const { file } = configDir(t, { concurrency: 2, name: 'from-file', logSubject: true, http: '127.0.0.1:8025' });
  const s = loadSettings(file, {
    MAILBRIDGE_CONCURRENCY: '16', MAILBRIDGE_TOKEN: ENV_TOKEN, MAILBRIDGE_LOG_SUBJECT: 'false', MAILBRIDGE_HTTP: 'off',
  });
  t.match(s, { agent: { concurrency: 16, name: 'from-file', token: ENV_TOKEN }, logSubject: false, http: null });
});

t.test('"http": false turns the HTTP server off', async (t) => {
  const { file } = configDir(t, { http: false });
  t.equal(loadSettings(file, {}).http, null);
});

t.test('no --config and no default file: the environment alone', { skip: existsSync(DEFAULT_CONFIG_PATH) && `${DEFAULT_CONFIG_PATH} exists here` }, async (t) => {
  const s = loadSettings(undefined, { MAILBRIDGE_WORKER_URL: URL, MAILBRIDGE_TOKEN: ENV_TOKEN, MAILBRIDGE_STATE_DIR: 'state' });
  t.match(s, { file: null, stateDir: 'state', agent: { workerUrl: URL, token: ENV_TOKEN } });
});

t.test('a systemd credential ($CREDENTIALS_DIRECTORY/token) is the token only when nothing else names one', async (t) => {
  const creds = configDir(t, {}).dir;
  writeFileSync(join(creds, 'token'), `${ENV_TOKEN}\n`);
  const env = { CREDENTIALS_DIRECTORY: creds };
  const bare = configDir(t, { tokenFile: undefined }).file;
  t.equal(loadSettings(bare, env).agent.token, ENV_TOKEN, 'LoadCredential=token:… alone is enough');
  if (!existsSync(DEFAULT_CONFIG_PATH)) t.equal(loadSettings(undefined, { ...env, MAILBRIDGE_WORKER_URL: URL }).agent.token, ENV_TOKEN, 'with no file at all too');
  t.equal(loadSettings(configDir(t, {}).file, env).agent.token, TOKEN, "the file's tokenFile comes first");
  t.equal(loadSettings(bare, { ...env, MAILBRIDGE_TOKEN: 'var-token-0123456789abcdef' }).agent.token, 'var-token-0123456789abcdef', 'so does MAILBRIDGE_TOKEN');
  writeFileSync(join(creds, 'token'), 'short\n');
  t.throws(() => loadSettings(bare, env), { message: /^\$CREDENTIALS_DIRECTORY\/token: must be at least 16/ }, 'a bad one is named as such');
  t.throws(() => loadSettings(bare, { CREDENTIALS_DIRECTORY: join(creds, 'none') }),
    { message: /^token: set tokenFile \(or token\) in .*agent\.json, or MAILBRIDGE_TOKEN_FILE \(or MAILBRIDGE_TOKEN\), or a systemd credential named token/ },
    'a credentials directory without token: the usual message');
});

t.test('every bad setting names its key', async (t) => {
  const cases: [Record<string, unknown> | string, Record<string, string>, RegExp][] = [
    ['{"workerUrl": ', {}, /agent\.json: not valid JSON/],
    ['[1, 2]', {}, /agent\.json: must hold one JSON object/],
    [{ concurency: 4 }, {}, /agent\.json: unknown key "concurency" \(known: workerUrl, /],
    [{ concurrency: '4' }, {}, /agent\.json: concurrency: must be a whole number, got "4"/],
    [{ concurrency: 0 }, {}, /agent\.json: concurrency: must be an integer from 1 to 64, got 0/],
    [{ traceHeader: 'yes' }, {}, /agent\.json: traceHeader: must be true or false/],
    [{ workerUrl: 'https://relay.example/agent' }, {}, /agent\.json: workerUrl: must start with wss:\/\//],
    [{ target: 'http://dovecot' }, {}, /agent\.json: target: invalid target "http:\/\/dovecot"/],
    [{ stateDir: 'state' }, {}, /agent\.json: stateDir: must be an absolute path/],
    [{ tokenFile: '/nonexistent/token' }, {}, /agent\.json: tokenFile: cannot read \/nonexistent\/token/],
    [{ token: 'short-token-0123456789' }, {}, /agent\.json: set token or tokenFile, not both/],
    [{ http: 'localhost' }, {}, /agent\.json: http: expected host:port/],
    [{ journalRetentionDays: 0 }, {}, /agent\.json: journalRetentionDays: must be an integer from 1 to 3650/],
    [{ stopGraceMs: -1 }, {}, /agent\.json: stopGraceMs: must be an integer from 0 to 600000/],
    [{}, { MAILBRIDGE_CONCURRENCY: '65' }, /^MAILBRIDGE_CONCURRENCY: must be an integer from 1 to 64, got 65/],
    [{}, { MAILBRIDGE_LOG_SUBJECT: 'maybe' }, /^MAILBRIDGE_LOG_SUBJECT: must be true or false/],
    [{}, { MAILBRIDGE_TOKEN: 'short' }, /^MAILBRIDGE_TOKEN: must be at least 16 printable characters/],
    [{}, { MAILBRIDGE_CONCURENCY: '4' }, /^MAILBRIDGE_CONCURENCY: unknown variable/],
    [{ recipientsFile: 'recipients' }, {}, /agent\.json: recipientsFile: must be an absolute path/],
    [{}, { MAILBRIDGE_RECIPIENTS_FILE: 'recipients' }, /^MAILBRIDGE_RECIPIENTS_FILE: must be an absolute path/],
    [{ recipientDelimiter: '++' }, {}, /agent\.json: recipientDelimiter: must be one of \+ - _ \. = or empty, got "\+\+"/],
    [{}, { MAILBRIDGE_RECIPIENT_DELIMITER: '#' }, /^MAILBRIDGE_RECIPIENT_DELIMITER: must be one of/],
    [{ bounceRelay: 'lmtp://127.0.0.1:24' }, {}, /agent\.json: bounceRelay: must be smtp:\/\/host:port, got "lmtp:/],
    [{ bounceRelay: 'lmtp+unix:/run/dovecot/lmtp' }, {}, /agent\.json: bounceRelay: must be smtp:\/\/host:port/],
    [{}, { MAILBRIDGE_BOUNCE_RELAY: 'smtp://127.0.0.1:99999' }, /^MAILBRIDGE_BOUNCE_RELAY: invalid target .*port 99999 is out of range/],
    [{ bounceRelay: 42 }, {}, /agent\.json: bounceRelay: must be a string/],
    [{ reportingMta: 'not a domain' }, {}, /agent\.json: reportingMta: must be a domain name/],
    [{}, { MAILBRIDGE_AUTHSERV_ID: 'home;dmarc=pass' }, /MAILBRIDGE_AUTHSERV_ID: must be a host name/],
    [{}, { MAILBRIDGE_REPORTING_MTA: '-bad.example' }, /^MAILBRIDGE_REPORTING_MTA: must be a domain name/],
  ];
  for (const [cfg, env, message] of cases) {
    const { file } = configDir(t, cfg);
    t.throws(() => loadSettings(file, env), { name: 'ConfigError', message }, JSON.stringify([cfg, env]));
  }
  const missing = configDir(t, JSON.stringify({ tokenFile: '/etc/mailbridge/token' })).file;
  t.throws(() => loadSettings(missing, {}), new ConfigError(`workerUrl must be set in ${missing} or as MAILBRIDGE_WORKER_URL: wss://<your worker>/agent`));
  t.throws(() => loadSettings('/nonexistent/agent.json', {}), { message: /^\/nonexistent\/agent\.json: cannot read/ }, 'an explicit --config must exist');
});

t.test('as a process: a bad setting exits 2 with the message on stderr', async (t) => {
  const bad = configDir(t, { concurrency: 0 }).file;
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['--config', bad], {}, /^mailbridge-agent: .*agent\.json: concurrency: must be an integer from 1 to 64, got 0\n$/],
    [['--config', '/nonexistent/agent.json'], {}, /\/nonexistent\/agent\.json: cannot read/],
    [['--conf', bad], {}, /Unknown option '--conf'.*usage: mailbridge-agent \[--config <file>\]/],
    [['--config', configDir(t, {}).file], { MAILBRIDGE_HEARTBEAT_MS: '10s' }, /MAILBRIDGE_HEARTBEAT_MS: not a whole number: "10s"/],
    [['--config', configDir(t, {}).file], { MAILBRIDGE_DOVEADM_URL: 'localhost:8080' }, /^mailbridge-agent: MAILBRIDGE_DOVEADM_URL: must start with http:\/\//],
  ];
  for (const [args, env, message] of cases) {
    const p = runAgent(env, args);
    t.equal(await p.exit, 2, `exit 2 for ${args.join(' ')} ${JSON.stringify(env)}`);
    t.match(p.err(), message);
    t.equal(p.out(), '', 'nothing started');
  }
});
