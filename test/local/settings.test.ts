// npm start's settings (local/settings.ts): the Worker's vars and the agent's
// MAILBRIDGE_* read from the environment with production's parsers; unknown,
// misspelt, malformed and not-applicable ones are errors naming the variable.
import t, { type Test } from 'tap';
import { editDistance, nearMiss, readLocalSettings } from '../../local/settings.ts';

const fails = (t: Test, env: Record<string, string>, msg: RegExp, what: string) => {
  t.throws(() => readLocalSettings(env), { name: 'ConfigError', message: msg }, what);
};

t.test('the defaults, with nothing of ours set', async (t) => {
  const s = readLocalSettings({ PATH: '/usr/bin', HOME: '/root', HTTP_PORT: '8080', XDG_DATA_DIRS: '/usr/share', npm_lifecycle_event: 'start' });
  t.equal(s.smtpPort, 2525);
  t.equal(s.dataDir, 'data');
  t.equal(s.target, undefined);
  t.same(s.workerVars, {}, 'no Worker var set: the Worker uses its own defaults');
  t.equal(s.maxBytes, 25 * 1024 * 1024);
  t.equal(s.agent.name, 'local-agent');
  t.equal(s.agent.concurrency, 16, "the agent's own default");
  t.equal(s.stopGraceMs, 10_000);
  t.equal(s.verbose, false);
});

t.test('Worker vars and agent settings are read and passed on', async (t) => {
  const s = readLocalSettings({
    ALLOWED_RECIPIENTS: 'alice@example.test', MAX_MESSAGE_BYTES: '65536', VERDICT_WAIT_MS: '0', SHARDS: '2', LOG_LEVEL: 'debug',
    MAILBRIDGE_CONCURRENCY: '4', MAILBRIDGE_NAME: 'laptop', MAILBRIDGE_STOP_GRACE_MS: '2000', MAILBRIDGE_LOG_SUBJECT: 'yes',
    SMTP_PORT: '0', DATA_DIR: '/tmp/x', RELAY_TARGET: 'lmtp://127.0.0.1:24',
  });
  t.same(s.workerVars, { ALLOWED_RECIPIENTS: 'alice@example.test', MAX_MESSAGE_BYTES: '65536', VERDICT_WAIT_MS: '0', SHARDS: '2', LOG_LEVEL: 'debug' });
  t.equal(s.maxBytes, 65536, 'the ingress uses the Worker\'s MAX_MESSAGE_BYTES');
  t.equal(s.verbose, true);
  t.equal(s.agent.concurrency, 4);
  t.equal(s.agent.name, 'laptop');
  t.equal(s.agent.shards, 2, 'the agent follows SHARDS');
  t.equal(s.stopGraceMs, 2000);
  t.equal(s.agentOptions.logSubject, true);
  t.equal(s.smtpPort, 0);
  t.equal(s.target, 'lmtp://127.0.0.1:24');
});

t.test('the doveadm check (MAILBRIDGE_DOVEADM_*) is passed on to the agent, checked like the daemon\'s', async (t) => {
  const dir = t.testdir({ key: 'doveadm-key\n' });
  const s = readLocalSettings({ RELAY_TARGET: 'lmtp://127.0.0.1:24', MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080', MAILBRIDGE_DOVEADM_API_KEY_FILE: `${dir}/key` });
  t.match(s.agent, { doveadmUrl: 'http://127.0.0.1:8080', doveadmApiKey: 'doveadm-key' });
  t.match(readLocalSettings({}).agent, { doveadmUrl: null, doveadmApiKey: null }, 'unset: off');
  fails(t, { MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080/doveadm/v1', MAILBRIDGE_DOVEADM_API_KEY: 'k' }, /^MAILBRIDGE_DOVEADM_URL: the base URL only/, 'malformed URL');
  fails(t, { MAILBRIDGE_DOVEADM_API_KEY_FILE: '/nonexistent/key', MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080' }, /^MAILBRIDGE_DOVEADM_API_KEY_FILE: cannot read/, 'key file');
  fails(t, { RELAY_TARGET: 'smtp://127.0.0.1:25', MAILBRIDGE_DOVEADM_URL: 'http://127.0.0.1:8080', MAILBRIDGE_DOVEADM_API_KEY: 'k' },
    /^MAILBRIDGE_DOVEADM_URL: only for an LMTP target \(Dovecot\), not RELAY_TARGET smtp:/, 'an SMTP target');
});

t.test('malformed values are refused by the production parsers, naming the variable', async (t) => {
  fails(t, { VERDICT_WAIT_MS: 'soon' }, /^VERDICT_WAIT_MS: must be an integer from 0 to 25000/, 'Worker var');
  fails(t, { RETRY_FIRST_MS: '1000', RETRY_MAX_MS: '500' }, /^RETRY_MAX_MS: /, 'Worker var relation');
  fails(t, { ALLOWED_RECIPIENTS: 'not an address' }, /^ALLOWED_RECIPIENTS: not an address/, 'Worker list');
  fails(t, { LOG_LEVEL: 'verbose' }, /^LOG_LEVEL: must be info or debug/, 'LOG_LEVEL');
  fails(t, { MAILBRIDGE_CONCURRENCY: 'many' }, /^MAILBRIDGE_CONCURRENCY: not a whole number/, 'agent int');
  fails(t, { MAILBRIDGE_CONCURRENCY: '0' }, /^MAILBRIDGE_CONCURRENCY: must be an integer from 1 to/, "agent range (validateConfig's)");
  fails(t, { MAILBRIDGE_STOP_GRACE_MS: '9999999' }, /^MAILBRIDGE_STOP_GRACE_MS: must be an integer from 0 to 600000/, "daemon's range");
  fails(t, { SMTP_PORT: '70000' }, /^SMTP_PORT: not a port/, 'SMTP_PORT');
  fails(t, { RELAY_TARGET: 'ftp://x' }, /^RELAY_TARGET: /, 'RELAY_TARGET');
  fails(t, { SHARDS: '2', MAILBRIDGE_SHARDS: '3' }, /^MAILBRIDGE_SHARDS: must equal the Worker's SHARDS \(2\)/, 'shards disagree');
});

t.test('unknown, misspelt and not-applicable names are refused', async (t) => {
  fails(t, { MAILBRIDGE_FOO: '1' }, /^MAILBRIDGE_FOO: unknown variable/, 'our prefix');
  fails(t, { RETRY_FIRTS_MS: '1000' }, /^RETRY_FIRTS_MS: unknown variable; did you mean RETRY_FIRST_MS\?/, 'swapped letters');
  fails(t, { SHARD: '2' }, /^SHARD: .*did you mean SHARDS\?/, 'a letter missing');
  fails(t, { LOG_LEVLE: 'debug' }, /did you mean LOG_LEVEL\?/, 'short name, one swap');
  fails(t, { MAILBRIDGE_TARGET: 'lmtp://127.0.0.1:24' }, /^MAILBRIDGE_TARGET: does not apply to npm start \(use RELAY_TARGET\)/, 'daemon-only key');
  fails(t, { MAILBRIDGE_HTTP: '127.0.0.1:8025' }, /^MAILBRIDGE_HTTP: does not apply/, 'no HTTP server here');
  fails(t, { MAILBRIDGE_TOKEN: 'x'.repeat(20) }, /^MAILBRIDGE_TOKEN: does not apply/, 'npm start makes the agent token');
  for (const name of ['AGENT_TOKENS', 'ADMIN_TOKEN', 'DEV_INGRESS_TOKEN']) fails(t, { [name]: 'x'.repeat(20) }, new RegExp(`^${name}: npm start makes its own`), name);
});

t.test('the near-miss rule: 1 edit under 10 characters, 2 from 10, a swap is one', async (t) => {
  t.equal(editDistance('RETRY_FIRST_MS', 'RETRY_FIRTS_MS'), 1);
  t.equal(editDistance('abc', 'abc'), 0);
  t.equal(editDistance('kitten', 'sitting'), 3);
  const known = ['SMTP_PORT', 'DATA_DIR', 'MAX_MESSAGE_BYTES'];
  t.equal(nearMiss('SMTP_PORT', known), null, 'the name itself');
  t.equal(nearMiss('SMTPPORT', known), 'SMTP_PORT');
  t.equal(nearMiss('HTTP_PORT', known), null, 'two edits from a short name: someone else\'s');
  t.equal(nearMiss('MAX_MESAGE_BYTE', known), 'MAX_MESSAGE_BYTES', 'two edits from a long name');
  t.equal(nearMiss('MAX_MSG_BYTES', known), null, 'four edits');
});
