#!/usr/bin/env node
// Builds dist/deb/portway-agent_VERSION_{arm64,armhf,amd64}.deb from the agent bundle (scripts/build-agent.mjs)
// with dpkg-deb --root-owner-group, so no root is needed. Each package holds:
//   /usr/lib/portway/portway-agent.js                        the bundle (run by /usr/bin/node)
//   /usr/lib/portway/node_modules/@serialport/bindings-cpp/  the serialport binding, this architecture's prebuild only
//   /usr/lib/portway/firstboot                               firmware-scripts/firstboot (applies portway.toml once)
//   /lib/systemd/system/portway-agent.service                systemd/portway-agent.service
//   /lib/systemd/system/portway-firstboot.service            systemd/portway-firstboot.service
//   /etc/portway/agent.json                                  a conffile: a valid template (firmware-scripts/deb/agent.json)
//   /usr/share/doc/portway-agent/{README,copyright,changelog.gz}
//   DEBIAN/{control,conffiles,md5sums,postinst,prerm,postrm}  maintainer scripts: firmware-scripts/deb/
//
// Usage: node scripts/build-deb.mjs [--agent-dir DIR] [--outdir DIR] [--arch arm64,armhf,amd64]
//   --agent-dir  a built agent (default dist/agent; run `npm run build:agent` first, as `npm run build:deb` does)
//   --outdir     where the .deb files go (default dist/deb)
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const PACKAGE = 'portway-agent';
/** Debian architecture → node-gyp-build prebuild directory (process.platform-process.arch). */
const ARCHES = { arm64: 'linux-arm64', armhf: 'linux-arm', amd64: 'linux-x64' };
// No project address exists yet; lintian reports bogus-mail-host until PORTWAY_DEB_MAINTAINER names a real one.
const MAINTAINER = process.env.PORTWAY_DEB_MAINTAINER ?? 'Portway maintainers <portway@localhost>';

const { values: args } = parseArgs({ options: { 'agent-dir': { type: 'string' }, outdir: { type: 'string' }, arch: { type: 'string' } } });
const agentDir = resolve(args['agent-dir'] ?? join(root, 'dist', 'agent'));
const outdir = resolve(args.outdir ?? join(root, 'dist', 'deb'));
const arches = (args.arch ?? Object.keys(ARCHES).join(',')).split(',');
for (const a of arches) if (!(a in ARCHES)) throw new Error(`unknown architecture ${a} (known: ${Object.keys(ARCHES).join(', ')})`);

const version = readFileSync(join(agentDir, 'VERSION'), 'utf8').trim();
if (!/^[0-9][A-Za-z0-9.+~-]*$/.test(version)) throw new Error(`not a Debian version: ${version}`);
// Reproducible: every file and the archive members get the commit time (or SOURCE_DATE_EPOCH).
const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? gitCommitTime() ?? Math.floor(Date.now() / 1000));

mkdirSync(outdir, { recursive: true });
const scratch = mkdtempSync(join(tmpdir(), 'portway-deb-'));
try {
  for (const arch of arches) {
    const file = buildOne(arch, join(scratch, arch));
    console.log(`${relative(process.cwd(), file)} ${(statSync(file).size / 1024).toFixed(0)} KiB`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

function buildOne(arch, pkgRoot) {
  const lib = join(pkgRoot, 'usr', 'lib', 'portway');
  put(join(agentDir, 'portway-agent.js'), join(lib, 'portway-agent.js'), 0o755);
  const binding = join('node_modules', '@serialport', 'bindings-cpp');
  for (const f of ['package.json', join('dist', 'index.js')]) put(join(agentDir, binding, f), join(lib, binding, f));
  const prebuilds = join(agentDir, binding, 'prebuilds', ARCHES[arch]);
  for (const f of readdirSync(prebuilds)) put(join(prebuilds, f), join(lib, binding, 'prebuilds', ARCHES[arch], f));

  put(join(root, 'firmware-scripts', 'firstboot'), join(lib, 'firstboot'), 0o755);
  for (const unit of ['portway-agent.service', 'portway-firstboot.service']) put(join(root, 'systemd', unit), join(pkgRoot, 'lib', 'systemd', 'system', unit));
  put(join(root, 'firmware-scripts', 'deb', 'agent.json'), join(pkgRoot, 'etc', 'portway', 'agent.json'));

  const doc = join(pkgRoot, 'usr', 'share', 'doc', PACKAGE);
  put(join(root, 'firmware-scripts', 'deb', 'README'), join(doc, 'README'));
  write(join(doc, 'copyright'), copyright());
  write(join(doc, 'changelog.gz'), gzipSync(changelog(), { level: 9 }));

  const debian = join(pkgRoot, 'DEBIAN');
  for (const script of ['postinst', 'prerm', 'postrm']) put(join(root, 'firmware-scripts', 'deb', script), join(debian, script), 0o755);
  write(join(debian, 'conffiles'), '/etc/portway/agent.json\n');
  write(join(debian, 'md5sums'), md5sums(pkgRoot));
  write(join(debian, 'control'), control(arch, installedSizeKiB(pkgRoot)));

  for (const p of [pkgRoot, ...walk(pkgRoot)]) {
    if (statSync(p).isDirectory()) chmodSync(p, 0o755);
    utimesSync(p, epoch, epoch);
  }
  const deb = join(outdir, `${PACKAGE}_${version}_${arch}.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', pkgRoot, deb], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
  });
  return deb;
}

function control(arch, installedSize) {
  return [
    `Package: ${PACKAGE}`,
    `Version: ${version}`,
    `Architecture: ${arch}`,
    `Maintainer: ${MAINTAINER}`,
    `Installed-Size: ${installedSize}`,
    // The serialport prebuilds need glibc 2.28 and the C++ runtime; adduser makes the system user.
    'Depends: nodejs (>= 20), adduser, libc6 (>= 2.28), libgcc-s1, libstdc++6',
    'Section: net',
    'Priority: optional',
    'Description: Portway device agent: reach TCP and serial services through a relay',
    ' The Portway agent keeps one control connection to a self-hosted Portway relay',
    ' and serves the TCP and serial services listed in /etc/portway/agent.json to',
    ' authorised users, end-to-end encrypted. It runs as the system user portway',
    ' (member of dialout) under a hardened systemd unit and logs to the journal.',
    '',
  ].join('\n');
}

function copyright() {
  const year = new Date(epoch * 1000).getUTCFullYear();
  const thirdParty = readFileSync(join(agentDir, 'THIRD-PARTY.txt'), 'utf8').trimEnd().split('\n');
  return [
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: portway',
    '',
    'Files: *',
    `Copyright: ${year} Portway contributors`,
    'License: Expat',
    '',
    'Files: usr/lib/portway/portway-agent.js usr/lib/portway/node_modules/*',
    'Copyright: the authors of each bundled package',
    'License: Expat and ISC and BSD-3-Clause',
    ` ${thirdParty[0]}`,
    ...thirdParty.slice(1).map((l) => `   ${l}`),
    ' .',
    ' node-forge (Copyright (c) 2010, Digital Bazaar, Inc.) is used under the',
    ' BSD-3-Clause terms below.',
    '',
    'License: Expat',
    ' Permission is hereby granted, free of charge, to any person obtaining a copy',
    ' of this software and associated documentation files (the "Software"), to deal',
    ' in the Software without restriction, including without limitation the rights',
    ' to use, copy, modify, merge, publish, distribute, sublicense, and/or sell',
    ' copies of the Software, and to permit persons to whom the Software is',
    ' furnished to do so, subject to the following conditions:',
    ' .',
    ' The above copyright notice and this permission notice shall be included in',
    ' all copies or substantial portions of the Software.',
    ' .',
    ' THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR',
    ' IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,',
    ' FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE',
    ' AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER',
    ' LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,',
    ' OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE',
    ' SOFTWARE.',
    '',
    'License: ISC',
    ' Permission to use, copy, modify, and/or distribute this software for any',
    ' purpose with or without fee is hereby granted, provided that the above',
    ' copyright notice and this permission notice appear in all copies.',
    ' .',
    ' THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES',
    ' WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF',
    ' MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY',
    ' SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES',
    ' WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION',
    ' OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN',
    ' CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.',
    '',
    'License: BSD-3-Clause',
    ' Redistribution and use in source and binary forms, with or without',
    ' modification, are permitted provided that the following conditions are met:',
    '     * Redistributions of source code must retain the above copyright',
    '       notice, this list of conditions and the following disclaimer.',
    '     * Redistributions in binary form must reproduce the above copyright',
    '       notice, this list of conditions and the following disclaimer in the',
    '       documentation and/or other materials provided with the distribution.',
    '     * Neither the name of Digital Bazaar, Inc. nor the',
    '       names of its contributors may be used to endorse or promote products',
    '       derived from this software without specific prior written permission.',
    ' .',
    ' THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND',
    ' ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED',
    ' WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE',
    ' DISCLAIMED. IN NO EVENT SHALL DIGITAL BAZAAR BE LIABLE FOR ANY',
    ' DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES',
    ' (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES;',
    ' LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND',
    ' ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT',
    ' (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS',
    ' SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.',
    '',
  ].join('\n');
}

function changelog() {
  const date = new Date(epoch * 1000).toUTCString().replace(/^(\w+), (\d+) (\w+) (\d+) ([\d:]+) GMT$/, '$1, $2 $3 $4 $5 +0000');
  return `${PACKAGE} (${version}) unstable; urgency=medium\n\n  * Release ${version}; see the project's git history.\n\n -- ${MAINTAINER}  ${date}\n`;
}

function md5sums(pkgRoot) {
  return walk(pkgRoot)
    .filter((p) => statSync(p).isFile() && !relative(pkgRoot, p).startsWith('DEBIAN') && !relative(pkgRoot, p).startsWith('etc/'))
    .map((p) => `${createHash('md5').update(readFileSync(p)).digest('hex')}  ${relative(pkgRoot, p)}`)
    .sort()
    .join('\n')
    .concat('\n');
}

function installedSizeKiB(pkgRoot) {
  return walk(pkgRoot)
    .filter((p) => !relative(pkgRoot, p).startsWith('DEBIAN'))
    .reduce((sum, p) => sum + (statSync(p).isFile() ? Math.ceil(statSync(p).size / 1024) : 1), 0);
}

function put(from, to, mode = 0o644) {
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  copyFileSync(from, to);
  chmodSync(to, mode);
}

function write(to, content, mode = 0o644) {
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  writeFileSync(to, content);
  chmodSync(to, mode);
}

function walk(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    out.push(p);
    if (entry.isDirectory()) out.push(...walk(p));
  }
  return out;
}

function gitCommitTime() {
  try {
    return execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || undefined;
  } catch {
    return undefined; // not a git checkout (e.g. an unpacked npm tarball): fall back to now
  }
}
