#!/usr/bin/env node
// Builds the device bundle in dist/agent/:
//   portway-agent.js (+ .map, .LEGAL.txt)   one esbuild bundle, Node 20 target, version injected
//   VERSION                                  the package version, one line
//   THIRD-PARTY.txt                          name, version and license of every package inside the bundles
//   node_modules/@serialport/bindings-cpp/   the serialport native binding, kept external (STYLE §10):
//     package.json                           { name, version, main } only
//     dist/index.js                          bindings-cpp's JS and its deps (debug, node-gyp-build, ...) as one bundle
//     prebuilds/linux-{arm64,arm,x64}/*.glibc.node   the N-API prebuilds for the devices we support
//
// Why this layout: the agent bundle does `require('@serialport/bindings-cpp')` (external), which Node resolves
// from node_modules/ beside the bundle. bindings-cpp finds its addon with node-gyp-build(join(__dirname, '../')),
// i.e. from its own package directory: `prebuilds/<platform>-<arch>/` is matched by platform and arch, then the
// file by its tags (armv6/armv7/armv8 from process.config, glibc unless /etc/alpine-release exists). Bundling
// bindings-cpp into the agent bundle would point that __dirname at the bundle's parent directory instead.
// The .deb (scripts/build-deb.mjs) keeps only the one platform directory its architecture needs.
//
// Usage: node scripts/build-agent.mjs [--outdir DIR]   (default dist/agent; tests build into a temp dir)
import { build } from 'esbuild';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
const { values: args } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = args.outdir ? resolve(args.outdir) : join(root, 'dist', 'agent');

/** Prebuild directories shipped beside the bundle, and the file-name tags kept in each (no musl, no Android). */
const SERIALPORT_PREBUILDS = {
  'linux-arm64': /\.armv8\.glibc\.node$/,
  'linux-arm': /\.armv[67]\.glibc\.node$/,
  'linux-x64': /\.glibc\.node$/,
};
const BINDING_PACKAGE = '@serialport/bindings-cpp';

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
  external: [BINDING_PACKAGE, 'bufferutil', 'utf-8-validate'],
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs);
const forbidden = inputs.filter((p) => /^(relay|client|cli)\/|node_modules\/(aedes|better-sqlite3)\//.test(p));
if (forbidden.length > 0) {
  console.error(`agent bundle pulled in code that must not reach the device:\n  ${forbidden.join('\n  ')}`);
  process.exit(1);
}
// Memory on the device: code that is only loaded costs RSS too (all of node-forge ~10 MB at load, zod's 60
// locales ~350 KiB of source). Guard the two ways it came back before: `import { z } from 'zod'` (a namespace
// re-export esbuild cannot shake) and importing node-forge itself instead of node-forge/lib/asn1.
const bundleOutput = Object.values(result.metafile.outputs).find((o) => o.entryPoint !== undefined);
const heavy = Object.entries(bundleOutput.inputs)
  .filter(([p, i]) => i.bytesInOutput > 0 && (/node_modules\/zod\/.*locales\/(?!(en|index)\.js)/.test(p) || /node_modules\/node-forge\/lib\/(?!(forge|baseN|util|oids|asn1)\.js)/.test(p)))
  .map(([p]) => p);
if (heavy.length > 0) {
  console.error(`agent bundle pulled in code the device should not load (use \`import * as z from 'zod'\` and node-forge/lib/asn1):\n  ${heavy.join('\n  ')}`);
  process.exit(1);
}
writeFileSync(join(outdir, 'VERSION'), `${version}\n`);

const binding = await buildSerialportBinding();
writeFileSync(join(outdir, 'THIRD-PARTY.txt'), thirdPartyNotice([...inputs, ...binding.inputs]));
const bindingBytes = du(join(outdir, 'node_modules'));
const size = statSync(join(outdir, 'portway-agent.js')).size;
console.log(`${relative(process.cwd(), join(outdir, 'portway-agent.js'))} ${kib(size)} (version ${version}); serialport binding ${kib(bindingBytes)} for ${Object.keys(SERIALPORT_PREBUILDS).join(', ')}`);

async function buildSerialportBinding() {
  const requireFromRoot = createRequire(join(root, 'package.json'));
  const srcDir = dirname(requireFromRoot.resolve(`${BINDING_PACKAGE}/package.json`));
  const srcPackage = JSON.parse(readFileSync(join(srcDir, 'package.json'), 'utf8'));
  const dest = join(outdir, 'node_modules', ...BINDING_PACKAGE.split('/'));
  rmSync(join(outdir, 'node_modules'), { recursive: true, force: true });
  mkdirSync(join(dest, 'dist'), { recursive: true });
  const bundled = await build({
    entryPoints: [join(srcDir, srcPackage.main)],
    outfile: join(dest, 'dist', 'index.js'),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    keepNames: true,
    legalComments: 'inline',
    metafile: true,
    logLevel: 'error', // node-gyp-build's require(computed path) is meant to stay a runtime require
  });
  writeFileSync(join(dest, 'package.json'), `${JSON.stringify({ name: srcPackage.name, version: srcPackage.version, license: srcPackage.license, main: 'dist/index.js' }, null, 2)}\n`);
  cpSync(join(srcDir, 'LICENSE'), join(dest, 'LICENSE'));
  for (const [platformDir, keep] of Object.entries(SERIALPORT_PREBUILDS)) {
    const from = join(srcDir, 'prebuilds', platformDir);
    const files = readdirSync(from).filter((f) => keep.test(f));
    if (files.length === 0) throw new Error(`no ${platformDir} prebuild in ${relative(root, from)}`);
    mkdirSync(join(dest, 'prebuilds', platformDir), { recursive: true });
    for (const f of files) cpSync(join(from, f), join(dest, 'prebuilds', platformDir, f));
  }
  return { inputs: [relative(root, join(srcDir, 'package.json')), ...Object.keys(bundled.metafile.inputs)] };
}

/** One line per npm package whose code is in the bundles: name, version, license (from its package.json). */
function thirdPartyNotice(inputPaths) {
  const packageDirs = new Set();
  for (const p of inputPaths) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(p);
    if (m) packageDirs.add(m[1]);
  }
  const lines = new Set();
  for (const dir of packageDirs) {
    const pkg = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
    const license = typeof pkg.license === 'string' ? pkg.license : (pkg.license?.type ?? 'see package');
    lines.add(`${pkg.name} ${pkg.version} ${license}`);
  }
  const header = 'Packages bundled into portway-agent.js and node_modules/@serialport/bindings-cpp (name, version, license):';
  return `${header}\n${[...lines].sort().join('\n')}\n`;
}

function du(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, name) => sum + du(join(path, name)), 0);
}

function kib(bytes) {
  return `${(bytes / 1024).toFixed(0)} KiB`;
}
