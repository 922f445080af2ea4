// Issue #22: a test that needs a tool from outside npm skips, saying why, only off CI; under
// CI=true (.ci/run) the missing tool fails the file. Each file is run here with a PATH that
// holds node alone, so the tool it needs is missing.
import t from 'tap';
import { execFile } from 'node:child_process';
import { dirname } from 'node:path';
import { ciSkip } from '../helpers/skip.ts';

t.test('ciSkip: nothing missing runs; missing skips with the reason, or throws under CI', async (t) => {
  const was = process.env.CI;
  t.teardown(() => { if (was === undefined) delete process.env.CI; else process.env.CI = was; });
  delete process.env.CI;
  t.equal(ciSkip('perf', null), false);
  t.equal(ciSkip('perf', false), false);
  t.equal(ciSkip('perf', 'no perf here'), 'perf not available: no perf here');
  process.env.CI = 'true';
  t.equal(ciSkip('perf', null), false);
  t.throws(() => ciSkip('perf', 'no perf here'), /CI must run the perf tests: no perf here/);
});

// The tools each file needs: systemd-analyze; perf (and tracefs probes).
const FILES = ['test/edge-agent/systemd-unit.test.ts', 'test/bench/cpu-scope.test.ts', 'test/bench/invocation-owner.test.ts'];
for (const file of FILES) {
  t.test(`${file}: without its tool, a failure under CI, a skip elsewhere`, async (t) => {
    const run = (ci: boolean) => new Promise<{ status: number; stdout: string; stderr: string }>((res) => {
      execFile(process.execPath, ['--disable-warning=ExperimentalWarning', file], {
        encoding: 'utf8', timeout: 90_000,
        env: { PATH: dirname(process.execPath), HOME: process.env.HOME, ...(ci ? { CI: 'true' } : {}) },
      }, (err, stdout, stderr) => res({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
    });
    const [ci, dev] = await Promise.all([run(true), run(false)]);
    t.not(ci.status, 0, 'CI: the file fails');
    t.match(ci.stdout + ci.stderr, /CI must run the .* tests/, 'CI: saying which tool is missing');
    t.equal(dev.status, 0, `elsewhere: it passes ${dev.stderr.slice(-300)}`);
    t.match(dev.stdout, /# SKIP .*not available/, 'elsewhere: skipped with the reason');
  });
}
