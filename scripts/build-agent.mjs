#!/usr/bin/env node
// Builds the device bundle: dist/agent/portway-agent.js (one esbuild bundle, Node 20 target) and VERSION.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
const outdir = join(root, 'dist', 'agent');
mkdirSync(outdir, { recursive: true });
const result = await build({
  entryPoints: [join(root, 'agent', 'src', 'bundle-main.ts')],
  outfile: join(outdir, 'portway-agent.js'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  minify: true,
  keepNames: true,
  legalComments: 'linked',
  banner: { js: '#!/usr/bin/env node' },
  define: { 'process.env.PORTWAY_VERSION': JSON.stringify(version) },
  external: ['@serialport/bindings-cpp', 'bufferutil', 'utf-8-validate'],
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs);
const forbidden = inputs.filter((p) => /^(relay|client|cli)\/|node_modules\/(aedes|better-sqlite3)\//.test(p));
if (forbidden.length > 0) {
  console.error(`agent bundle pulled in code that must not reach the device:\n  ${forbidden.join('\n  ')}`);
  process.exit(1);
}
writeFileSync(join(outdir, 'VERSION'), `${version}\n`);
const size = statSync(join(outdir, 'portway-agent.js')).size;
console.log(`dist/agent/portway-agent.js ${(size / 1024).toFixed(0)} KiB (version ${version})`);
