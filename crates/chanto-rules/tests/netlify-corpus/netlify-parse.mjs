// Runs Netlify's own rule parsers (@netlify/redirect-parser and
// @netlify/headers-parser, installed by scripts/test into target/npm) over
// case directories and prints what they make of each file, as JSON, for
// tests/netlify_differential.rs to compare with chanto_rules::compile.
//
//   node netlify-parse.mjs NODE_MODULES_DIR CASE_DIR...
//
// Each case directory may hold `_redirects`, `_headers` and `netlify.toml`.
// The parsers' rules carry no line numbers, so the test writes each rule (a
// `_redirects` line, a `_headers` block, a `netlify.toml` table) as a case of
// its own, at its own line (the lines before it left empty).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, ...cases] = process.argv.slice(2);
const load = (pkg) => import(pathToFileURL(join(modules, '@netlify', pkg, 'lib', 'index.js')).href);
const { parseAllRedirects } = await load('redirect-parser');
const { parseAllHeaders } = await load('headers-parser');

const messages = (errors) => errors.map((e) => String(e && e.message ? e.message : e));
// RegExps stringify as {}: give headers' `forRegExp` as [source, flags].
const headers = ({ headers, errors }) => ({
  headers: headers.map((h) => ({ ...h, forRegExp: h.forRegExp ? [h.forRegExp.source, h.forRegExp.flags] : null })),
  errors: messages(errors),
});
const redirects = ({ redirects, errors }) => ({ redirects, errors: messages(errors) });

const out = [];
for (const dir of cases) {
  const file = (name) => (existsSync(join(dir, name)) ? join(dir, name) : undefined);
  const result = { dir };
  const redirectsFile = file('_redirects');
  const headersFile = file('_headers');
  const toml = file('netlify.toml');
  if (redirectsFile) result.redirects_file = redirects(await parseAllRedirects({ redirectsFiles: [redirectsFile] }));
  if (headersFile) result.headers_file = headers(await parseAllHeaders({ headersFiles: [headersFile] }));
  if (toml) {
    result.toml_redirects = redirects(await parseAllRedirects({ netlifyConfigPath: toml }));
    result.toml_headers = headers(await parseAllHeaders({ netlifyConfigPath: toml }));
  }
  // Both files: the headers as Netlify merges them (which one wins).
  if (headersFile && toml) {
    result.headers_all = headers(await parseAllHeaders({ headersFiles: [headersFile], netlifyConfigPath: toml }));
  }
  out.push(result);
}
process.stdout.write(JSON.stringify(out));
