/**
 * systemd/portway-agent.service and systemd/portway-relay.service: `systemd-analyze verify` accepts them,
 * `systemd-analyze security --offline=true` scores each at most 4.5 ("OK" or better), and the settings
 * the device depends on are there (restart policy, exit 78, user and groups, directories, hardening).
 * The units are checked as copies in a temp directory; ExecStart's /usr/bin/node is pointed at this node
 * when /usr/bin/node is missing, since verify insists that the executable exists.
 * systemd does not run here, so the one setting most likely to break Node is also tried outside it: the
 * agent bundle enrolls and serves a stream under the unit's own SystemCallFilter= lines, applied by
 * test/fixtures/seccomp-exec.py (python3-seccomp) with EPERM for everything else.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ManagedProcess, isEvent, relayUnitNodeArgs, unitEnvironment } from '../../devtools/portway-cluster';
import { Disposer, HELLO_TEXT, makeTempDir, runProcess, startCluster, startHttpServer } from '../helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const UNITS_DIR = path.join(ROOT, 'systemd');
const UNITS = ['portway-agent.service', 'portway-relay.service'] as const;
const MAX_EXPOSURE = 4.5;

/** `Key=value` lines of one unit, every value of a repeated key in order (comments and sections dropped). */
function unitSettings(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`not a setting: ${line}`);
    const key = line.slice(0, eq);
    settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1)]);
  }
  return settings;
}

async function unitCopy(disposer: Disposer, unit: string): Promise<string> {
  const dir = await makeTempDir(disposer, 'portway-units-');
  const file = path.join(dir, unit);
  if (existsSync('/usr/bin/node')) {
    await copyFile(path.join(UNITS_DIR, unit), file);
  } else {
    const text = await readFile(path.join(UNITS_DIR, unit), 'utf8');
    await writeFile(file, text.replaceAll('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `));
  }
  return file;
}

describe('systemd units', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it.each(UNITS)('%s passes systemd-analyze verify', async (unit) => {
    const file = await unitCopy(disposer, unit);
    const result = await runProcess(disposer, 'systemd-analyze', ['verify', file], { timeoutMs: 30_000 });
    // verify also warns (exit 0) about unknown keys and bad values: any line naming our unit is a failure.
    const complaints = `${result.stdout}\n${result.stderr}`.split('\n').filter((l) => l.includes(unit));
    expect({ code: result.code, complaints }).toEqual({ code: 0, complaints: [] });
  });

  it.each(UNITS)(`%s scores at most ${MAX_EXPOSURE} in systemd-analyze security --offline`, async (unit) => {
    const file = await unitCopy(disposer, unit);
    const result = await runProcess(disposer, 'systemd-analyze', ['security', '--offline=true', '--no-pager', file], { timeoutMs: 30_000 });
    const match = /Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)/.exec(result.stdout);
    if (!match) throw new Error(`no exposure level in: ${result.stdout.slice(-1000)} ${result.stderr}`);
    process.stdout.write(`${unit}: exposure ${match[1]} ${match[2]}\n`);
    expect(Number(match[1])).toBeLessThanOrEqual(MAX_EXPOSURE);
  });

  it.each(UNITS)('%s restarts forever but not on a bad config, and keeps the common hardening', (unit) => {
    const s = unitSettings(readFileSync(path.join(UNITS_DIR, unit), 'utf8'));
    const one = (key: string): string | undefined => s.get(key)?.at(-1);
    expect(one('Restart')).toBe('always');
    expect(one('StartLimitIntervalSec')).toBe('0');
    expect(one('RestartPreventExitStatus')).toBe('78');
    expect(one('User')).toBe('portway');
    expect(one('ConfigurationDirectory')).toBe('portway');
    expect(one('StandardOutput')).toBe('journal');
    // Debian's node, with Node options before the script if any (the relay's --max-semi-space-size=1).
    expect(one('ExecStart')).toMatch(/^\/usr\/bin\/node (--[a-z-]+(=\S+)? )*\//);
    expect(one('UMask')).toBe('0077');
    for (const key of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectClock', 'RestrictNamespaces', 'LockPersonality', 'RestrictRealtime', 'RestrictSUIDSGID']) {
      expect([key, one(key)]).toEqual([key, 'yes']);
    }
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('RestrictAddressFamilies')).toBe('AF_INET AF_INET6 AF_UNIX AF_NETLINK');
    expect(s.get('SystemCallFilter')?.[0]).toBe('@system-service');
    expect(one('SystemCallArchitectures')).toBe('native');
    expect(one('DevicePolicy')).toBe('closed');
    // Node's JIT maps writable+executable pages.
    expect(s.has('MemoryDenyWriteExecute')).toBe(false);
  });

  it('the agent unit runs the bundle as portway:dialout with only serial devices, no capabilities, under a watchdog', () => {
    const s = unitSettings(readFileSync(path.join(UNITS_DIR, 'portway-agent.service'), 'utf8'));
    expect(s.get('ExecStart')).toEqual(['/usr/bin/node /usr/lib/portway/portway-agent.js --config /etc/portway/agent.json']);
    expect(s.get('StateDirectory')).toEqual(['portway']);
    expect(s.get('SupplementaryGroups')).toEqual(['dialout']);
    expect(s.get('CapabilityBoundingSet')).toEqual(['']);
    expect(s.get('DeviceAllow')).toEqual(['char-ttyS rw', 'char-ttyUSB rw', 'char-ttyACM rw', 'char-ttyAMA rw']);
    expect(s.get('Wants')).toEqual(['network-online.target']);
    // READY=1 and WATCHDOG=1 come from systemd-notify children of the agent (test/integration/watchdog.test.ts).
    expect(s.get('Type')).toEqual(['notify']);
    expect(s.get('NotifyAccess')).toEqual(['all']);
    expect(s.get('WatchdogSec')).toEqual(['60s']);
  });

  it('the agent unit\'s GLIBC_TUNABLES names a tunable glibc knows, with the value meant (glibc ignores unknown ones silently)', async () => {
    const env = unitEnvironment('portway-agent.service');
    expect(Object.keys(env)).toEqual(['GLIBC_TUNABLES']);
    const loader = ['/lib64/ld-linux-x86-64.so.2', '/lib/ld-linux-aarch64.so.1'].find((p) => existsSync(p)) as string;
    const listed = await runProcess(disposer, loader, ['--list-tunables'], { env: { ...env } });
    expect(listed.stdout).toMatch(/^glibc\.malloc\.trim_threshold: 0x20000 /m);
  });
});

describe('portway-firstboot.service', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('passes systemd-analyze verify and runs once, before the agent and NetworkManager, only with portway.toml', async () => {
    const text = readFileSync(path.join(UNITS_DIR, 'portway-firstboot.service'), 'utf8');
    const dir = await makeTempDir(disposer, 'portway-units-');
    const file = path.join(dir, 'portway-firstboot.service');
    // verify insists that ExecStart exists: point it at the script in the tree.
    await writeFile(file, text.replace('ExecStart=/usr/lib/portway/firstboot', `ExecStart=${path.join(ROOT, 'firmware-scripts', 'firstboot')}`));
    const result = await runProcess(disposer, 'systemd-analyze', ['verify', file], { timeoutMs: 30_000 });
    const complaints = `${result.stdout}\n${result.stderr}`.split('\n').filter((l) => l.includes('portway-firstboot'));
    expect({ code: result.code, complaints }).toEqual({ code: 0, complaints: [] });
    const s = unitSettings(text);
    expect(s.get('Type')).toEqual(['oneshot']);
    expect(s.get('ConditionPathExists')).toEqual(['/boot/firmware/portway.toml']);
    expect(s.get('Before')?.join(' ').split(' ')).toEqual(expect.arrayContaining(['portway-agent.service', 'NetworkManager.service']));
    expect(s.get('StandardError')).toEqual(['journal+console']);
    expect(s.get('ProtectSystem')).toEqual(['strict']);
  });
});

describe('the agent unit\'s syscall filter', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('lets the agent bundle enroll, go online, serve a stream and stop cleanly', async () => {
    const agentDir = path.join(await makeTempDir(disposer, 'portway-seccomp-'), 'agent');
    const built = await runProcess(disposer, process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', agentDir], { timeoutMs: 120_000 });
    expect(built.code).toBe(0);
    const filters = unitSettings(readFileSync(path.join(UNITS_DIR, 'portway-agent.service'), 'utf8')).get('SystemCallFilter') ?? [];
    expect(filters).toEqual(['@system-service', '~@privileged @resources']);

    const http = await startHttpServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });
    await cluster.agent?.stop();
    await cluster.writeAgentConfig({ name: 'pi-seccomp', stateDir: path.join(cluster.dir, 'seccomp-state') });
    const seccompExec = path.join(ROOT, 'test', 'fixtures', 'seccomp-exec.py');
    const child = spawn('/usr/bin/python3', [seccompExec, ...filters, '--', process.execPath, path.join(agentDir, 'portway-agent.js'), '--config', cluster.agentConfigFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const agent = new ManagedProcess(child);
    cluster.children.add(agent);
    await agent.waitForLine(isEvent('agent.control.online'), 30_000, 'agent.control.online');
    expect(agent.stderr).toMatch(/seccomp-exec: \d+ syscalls allowed/);
    const { port } = await cluster.connect('web', 'pi-seccomp');
    const curl = await runProcess(disposer, 'curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`], { timeoutMs: 15_000 });
    expect(curl.stdout).toBe(HELLO_TEXT);
    expect(await agent.stop()).toBe(0);
  });
});

describe('the relay unit\'s allocator and syscall filter', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('the relay runs on the preloaded jemalloc under the unit\'s SystemCallFilter, with its Node options, and serves a stream', async () => {
    const unit = unitSettings(readFileSync(path.join(UNITS_DIR, 'portway-relay.service'), 'utf8'));
    const env = unitEnvironment('portway-relay.service');
    expect(env.LD_PRELOAD).toBe('libjemalloc.so.2');
    const filters = unit.get('SystemCallFilter') ?? [];
    expect(filters).toEqual(['@system-service', '~@privileged @resources']);

    const http = await startHttpServer(disposer);
    const seccompExec = path.join(ROOT, 'test', 'fixtures', 'seccomp-exec.py');
    const cluster = await startCluster(disposer, {
      services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }],
      relayEnv: env,
      relayNodeArgs: relayUnitNodeArgs(),
      relayLauncher: ['/usr/bin/python3', seccompExec, ...filters, '--'],
    });
    const relay = cluster.relay as ManagedProcess;
    expect(relay.stderr).toMatch(/seccomp-exec: \d+ syscalls allowed/);
    // A library the loader cannot find is only a warning ("cannot be preloaded ... ignored"): check it is mapped.
    expect(relay.stderr).not.toMatch(/cannot be preloaded/);
    const maps = readFileSync(`/proc/${String(relay.child.pid)}/maps`, 'utf8');
    expect(maps).toMatch(/\/libjemalloc\.so\.2\b/);
    const { port } = await cluster.connect('web');
    const curl = await runProcess(disposer, 'curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`], { timeoutMs: 15_000 });
    expect(curl.stdout).toBe(HELLO_TEXT);
    expect(await relay.stop()).toBe(0);
  });
});
