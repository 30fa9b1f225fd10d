/**
 * The agent's sd_notify support, with systemd's side played by test/fixtures/notify-listener.py (a unix datagram
 * socket that records each message and closes passed fds, as the manager does): systemd does not run as PID 1
 * here, so a transient `systemd-run` unit cannot be used. The agent is the esbuild bundle, run under the unit's
 * own SystemCallFilter= (test/fixtures/seccomp-exec.py), so spawning systemd-notify is checked under it too.
 *
 *  - READY=1 and WATCHDOG=1 (every WATCHDOG_USEC/2) arrive; SIGTERM sends STOPPING=1 and exits 0.
 *  - A hung event loop (test/fixtures/hang-on-signal.js, preloaded, spins on SIGUSR2) stops the pings: systemd
 *    would kill and restart the agent after WatchdogSec.
 *  - WATCHDOG_PID naming another process: READY=1 only, no pings.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ManagedProcess, isEvent, type PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, runProcess, startCluster, waitFor } from '../helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const UNIT = readFileSync(path.join(ROOT, 'systemd', 'portway-agent.service'), 'utf8');
const FILTERS = UNIT.split('\n').filter((l) => l.startsWith('SystemCallFilter=')).map((l) => l.slice('SystemCallFilter='.length));
const WATCHDOG_USEC = 1_000_000; // pings every 500 ms

const setup = new Disposer();
let bundle = '';
beforeAll(async () => {
  const dir = await makeTempDir(setup, 'portway-watchdog-bundle-');
  const built = await runProcess(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', dir], { timeoutMs: 120_000 });
  if (built.code !== 0) throw new Error(`build-agent failed: ${built.stderr}`);
  bundle = path.join(dir, 'portway-agent.js');
}, 180_000);
afterAll(() => setup.run());

describe('agent sd_notify and watchdog', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function listen(): Promise<{ socket: string; messages: ManagedProcess }> {
    const dir = await makeTempDir(disposer, 'portway-notify-');
    const socket = path.join(dir, 'notify.sock');
    const messages = new ManagedProcess(spawn('python3', [path.join(FIXTURES, 'notify-listener.py'), socket, '120'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    disposer.add(() => messages.stop('SIGTERM', 2_000), 'stop notify listener');
    await messages.waitForLine((l) => l === 'ready', 10_000, 'notify listener ready');
    return { socket, messages };
  }

  async function agentUnderSystemd(cluster: PortwayCluster, env: NodeJS.ProcessEnv): Promise<ManagedProcess> {
    await cluster.agent?.stop();
    const args = [path.join(FIXTURES, 'seccomp-exec.py'), ...FILTERS, '--', process.execPath, '--require', path.join(FIXTURES, 'hang-on-signal.js'), bundle, '--config', cluster.agentConfigFile];
    const agent = new ManagedProcess(spawn('/usr/bin/python3', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, ...env } }));
    cluster.children.add(agent);
    disposer.add(() => agent.stop('SIGKILL', 2_000), 'kill agent');
    return agent;
  }

  const count = (p: ManagedProcess, message: string): number => p.lines.filter((l) => l === message).length;

  it('sends READY=1 and WATCHDOG=1 every WATCHDOG_USEC/2; a hung event loop stops the pings', async () => {
    const cluster = await startCluster(disposer, { services: [] });
    const { socket, messages } = await listen();
    const agent = await agentUnderSystemd(cluster, { NOTIFY_SOCKET: socket, WATCHDOG_USEC: String(WATCHDOG_USEC) });
    await messages.waitForLine((l) => l === 'READY=1', 15_000, 'READY=1');
    await agent.waitForLine(isEvent('agent.control.online'), 30_000, 'agent.control.online');
    expect(agent.events('agent.watchdog.started')).toEqual([expect.objectContaining({ intervalMs: 500 })]);
    await waitFor(() => count(messages, 'WATCHDOG=1') >= 4, { timeoutMs: 10_000, intervalMs: 50, description: '4 watchdog pings' });
    expect(count(messages, 'READY=1')).toBe(1);
    expect(messages.lines.filter((l) => l !== 'ready' && !['READY=1', 'WATCHDOG=1', 'BARRIER=1'].includes(l))).toEqual([]);

    agent.child.kill('SIGUSR2');
    await waitFor(() => agent.stderr.includes('hanging the event loop'), { timeoutMs: 5_000, intervalMs: 20, description: 'the hang' });
    const atHang = count(messages, 'WATCHDOG=1');
    // Absence can only be observed over time: 3 s is six ping periods. A systemd-notify already started before
    // the hang may still deliver its ping, hence at most one more.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(count(messages, 'WATCHDOG=1') - atHang).toBeLessThanOrEqual(1);
    expect(agent.child.exitCode).toBeNull(); // hung, not dead: only the watchdog can end this
  }, 90_000);

  it('SIGTERM sends STOPPING=1 and exits 0; WATCHDOG_PID of another process means no pings', async () => {
    const cluster = await startCluster(disposer, { services: [] });
    const { socket, messages } = await listen();
    const agent = await agentUnderSystemd(cluster, { NOTIFY_SOCKET: socket, WATCHDOG_USEC: String(WATCHDOG_USEC), WATCHDOG_PID: '1' });
    await messages.waitForLine((l) => l === 'READY=1', 15_000, 'READY=1');
    await agent.waitForLine(isEvent('agent.control.online'), 30_000, 'agent.control.online');
    expect(await agent.stop('SIGTERM')).toBe(0);
    await messages.waitForLine((l) => l === 'STOPPING=1', 5_000, 'STOPPING=1');
    expect(count(messages, 'WATCHDOG=1')).toBe(0);
    expect(agent.events('agent.watchdog.started')).toEqual([]);
  }, 90_000);
});
