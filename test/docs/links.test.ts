// Every relative link in README.md and docs/*.md points to a file that exists, and its
// #anchor (if any) to a heading in that file, with GitHub's heading ids. Links in code
// (fenced blocks, `inline`) are not links. Also every docs/<name>.md named in the text.
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** The text outside fenced code blocks and inline code spans. */
function prose(md: string): string {
  return md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's ids for a file's headings: lower case, punctuation dropped, spaces to '-', repeats -1, -2. */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = (m[1] ?? '').toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

const headingCache = new Map<string, Set<string>>();
const headingsOf = (file: string) => {
  let h = headingCache.get(file);
  if (h === undefined) headingCache.set(file, h = anchors(readFileSync(file, 'utf8')));
  return h;
};

/** The dead links of one file, each as `file:line: target (why)`. */
function deadLinks(doc: string): string[] {
  const file = join(ROOT, doc);
  const lines = prose(readFileSync(file, 'utf8')).split('\n');
  const dead: string[] = [];
  lines.forEach((line, i) => {
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = m[1] ?? '';
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
      const [path, anchor] = target.split('#', 2) as [string, string | undefined];
      const to = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
      const where = `${doc}:${i + 1}: ${target}`;
      if (!existsSync(to)) dead.push(`${where} (no file ${relative(ROOT, to)})`);
      else if (anchor !== undefined && to.endsWith('.md') && !headingsOf(to).has(anchor.toLowerCase())) dead.push(`${where} (no heading #${anchor} in ${relative(ROOT, to)})`);
    }
    for (const m of line.matchAll(/(?<![\w/.-])docs\/[\w-]+\.md/g)) {
      if (!existsSync(join(ROOT, m[0]))) dead.push(`${doc}:${i + 1}: ${m[0]} (named, no such file)`);
    }
  });
  return dead;
}

t.test('the anchor rule matches GitHub on the cases the docs use', async (t) => {
  const ids = anchors('# 1. Deploy the Worker\n## Trust: Authentication-Results\n### The local relay (`npm start`) and `wrangler dev`\n## Runs\n## Runs\n');
  t.same([...ids], ['1-deploy-the-worker', 'trust-authentication-results', 'the-local-relay-npm-start-and-wrangler-dev', 'runs', 'runs-1']);
});

t.test('every relative link in README.md and docs/ resolves', async (t) => {
  t.ok(DOCS.length > 3, 'found the docs');
  for (const doc of DOCS) t.same(deadLinks(doc), [], doc);
});
