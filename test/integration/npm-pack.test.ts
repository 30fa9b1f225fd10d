/**
 * `npm pack` makes an installable package with the `portway` bin, and a lean one: the compiled runtime
 * (cli, agent, client, relay, protocol, shared), systemd units, docs and README; no tests, benchmarks, dev tools,
 * source maps, agent bundle or .deb files. Its size is printed.
 *
 * A real `npm install -g --prefix TMP ./portway-*.tgz` needs the registry for the dependencies (the npm cache here
 * does not hold them, and tests reach only loopback). So the install is done the way npm lays it out: the tarball
 * unpacked into PREFIX/lib/node_modules/portway, the bin linked as PREFIX/bin/portway, with the dependencies of this
 * checkout as its node_modules. That `portway` then runs each component from the packed files alone: --version,
 * `relay init` and a relay start (native better-sqlite3), the agent's config check, and the client's.
 * Packs from the built dist/ (npm run build runs before the tests) with --ignore-scripts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ManagedProcess, isEvent } from '../../devtools/portway-cluster';
import { Disposer, findFreePort, makeTempDir, runProcess } from '../helpers';
import { spawn } from 'node:child_process';

const ROOT = path.resolve(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; bin: Record<string, string>; dependencies: Record<string, string> };
/** A bound, not a target: the tarball was 165 KB when this test was written. */
const MAX_TARBALL_BYTES = 400 * 1024;

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number }[];
}

describe('npm pack', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function pack(): Promise<{ dir: string; result: PackResult }> {
    const dir = await makeTempDir(disposer, 'portway-pack-');
    const out = await runProcess(disposer, 'npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { timeoutMs: 120_000 });
    if (out.code !== 0) throw new Error(`npm pack failed: ${out.stderr}`);
    const [result] = JSON.parse(out.stdout) as PackResult[];
    return { dir, result: result as PackResult };
  }

  it('holds the runtime, units and docs, and nothing else', async () => {
    const { result } = await pack();
    process.stdout.write(`npm pack: ${result.filename} ${result.size} bytes (${result.unpackedSize} unpacked, ${result.entryCount} files)\n`);
    const files = result.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', pkg.bin.portway as string, 'dist/relay/src/main.js', 'dist/agent/src/main.js', 'dist/client/src/commands.js', 'systemd/portway-agent.service', 'docs/protocol.md']));
    const topLevels = new Set(files.map((f) => (f.startsWith('dist/') ? f.split('/').slice(0, 2).join('/') : f.split('/')[0])));
    expect([...topLevels].sort()).toEqual(['README.md', 'dist/agent', 'dist/cli', 'dist/client', 'dist/protocol', 'dist/relay', 'dist/shared', 'docs', 'package.json', 'systemd']);
    expect(files.filter((f) => /\.map$|\.test\.|^test\/|portway-agent\.js$|\.deb$|node_modules/.test(f))).toEqual([]);
    expect(result.size).toBeLessThan(MAX_TARBALL_BYTES);
    expect(readFileSync(path.join(ROOT, pkg.bin.portway as string), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  }, 120_000);

  it('installed as npm lays it out, the portway bin runs the relay, agent and client from the packed files', async () => {
    const { dir, result } = await pack();
    const prefix = path.join(dir, 'prefix');
    const installed = path.join(prefix, 'lib', 'node_modules', pkg.name);
    await mkdir(installed, { recursive: true });
    const untar = await runProcess(disposer, 'tar', ['-xzf', path.join(dir, result.filename), '-C', installed, '--strip-components=1']);
    expect(untar.code).toBe(0);
    await symlink(path.join(ROOT, 'node_modules'), path.join(installed, 'node_modules'));
    await mkdir(path.join(prefix, 'bin'));
    const bin = path.join(prefix, 'bin', 'portway');
    await symlink(path.join('..', 'lib', 'node_modules', pkg.name, pkg.bin.portway as string), bin);
    const run = (args: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof runProcess> =>
      runProcess(disposer, process.execPath, [bin, ...args], { timeoutMs: 60_000, env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'config'), ...env } });

    expect((await run(['--version'])).stdout.trim()).toBe(pkg.version);
    const relayDir = path.join(dir, 'relay');
    const init = await run(['relay', 'init', '--data', relayDir]);
    expect({ code: init.code, stderr: init.stderr }).toEqual({ code: 0, stderr: '' });
    const port = await findFreePort();
    const relay = new ManagedProcess(spawn(process.execPath, [bin, 'relay', '--data', relayDir, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] }));
    disposer.add(() => relay.stop('SIGTERM', 5_000), 'stop packed relay');
    await relay.waitForLine(isEvent('relay.started'), 20_000, 'relay.started');
    expect(await relay.stop()).toBe(0);

    await writeFile(path.join(dir, 'agent.json'), '{"relay": "nowhere"}');
    const agent = await run(['agent', '--config', path.join(dir, 'agent.json')]);
    expect(agent.code).toBe(78);
    expect(agent.stderr).toMatch(/^portway: PW_CONFIG_INVALID: .*relay/);
    const devices = await run(['devices']);
    expect(devices.code).toBe(1);
    expect(devices.stderr).toMatch(/^portway: PW_NOT_LOGGED_IN/);
    expect(existsSync(path.join(installed, 'dist', 'bench'))).toBe(false);
  }, 120_000);
});
