/**
 * The agent bundle on ARM: Debian trixie's own arm64 nodejs (and armhf for the binding check), fetched with
 * apt into a private cache (test/helpers/debian-node.ts) and run under qemu-user-static on this host.
 *
 * arm64: the agent enrolls with a real relay on loopback (PortwayCluster, whose own x64 agent is stopped
 *   first), goes online, and curl reaches an HTTP server through `portway connect` → relay → the arm64 agent.
 * arm64 and armhf: the bundle prints its version and the serialport binding beside it loads and runs
 *   native code (node-gyp-build picks the armv8 / armv7 prebuild).
 *
 * Node is 30-40x slower under emulation, yet the file takes about 40 s (2 cores; the first run also downloads
 * about 30 MB of packages per architecture). It needs qemu-user-static and a reachable Debian mirror.
 * Set PORTWAY_ARM_TEST=0 to skip it.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ManagedProcess, PortwayCluster, isEvent } from '../../devtools/portway-cluster';
import { HELLO_TEXT, Disposer, makeTempDir, runProcess, startHttpServer } from '../helpers';
import { type DebianArch, prepareDebianNode } from '../helpers/debian-node';

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION = (require(path.join(ROOT, 'package.json')) as { version: string }).version;
const maybe = process.env.PORTWAY_ARM_TEST === '0' ? describe.skip : describe;
/** Under emulation every wait is longer; production timers, not the fast test profile. */
const EMULATED_START_MS = 240_000;

const setup = new Disposer();
let bundle = '';

beforeAll(async () => {
  if (process.env.PORTWAY_ARM_TEST === '0') return;
  const agentDir = path.join(await makeTempDir(setup, 'portway-arm-bundle-'), 'agent');
  const built = await runProcess(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', agentDir], { timeoutMs: 120_000 });
  if (built.code !== 0) throw new Error(`build-agent failed: ${built.stderr}`);
  bundle = path.join(agentDir, 'portway-agent.js');
}, 180_000);
afterAll(() => setup.run());

maybe('agent bundle on ARM (Debian trixie nodejs under qemu-user)', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it.each<[DebianArch, string]>([
    ['arm64', 'linux-arm64/@serialport+bindings-cpp.armv8.glibc.node'],
    ['armhf', 'linux-arm/@serialport+bindings-cpp.armv7.glibc.node'],
  ])('%s: the bundle runs and its serialport binding executes native code', async (arch, prebuild) => {
    const node = await prepareDebianNode(disposer, arch);
    process.stdout.write(`${arch}: Debian nodejs ${node.version} ready in ${node.prepareMs} ms${node.cached ? ' (cached)' : ''}\n`);
    const version = await runProcess(disposer, node.qemu, [...node.qemuArgs, bundle, '--version'], { timeoutMs: 120_000 });
    expect(version.stdout.trim()).toBe(VERSION);
    // Opening /dev/null as a serial port fails inside the addon (tcsetattr), which proves that the addon runs.
    const probe = [
      `const req = require('node:module').createRequire(${JSON.stringify(bundle)});`,
      `const b = req('@serialport/bindings-cpp');`,
      `const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');`,
      `console.log(process.arch, maps.split('\\n').filter((l) => l.endsWith('.node')).map((l) => l.split(/\\s+/).pop())[0]);`,
      `b.LinuxBinding.open({ path: '/dev/null', baudRate: 9600 }).then(() => console.log('opened'), (e) => console.log('addon:', e.message));`,
    ].join('\n');
    const loaded = await runProcess(disposer, node.qemu, [...node.qemuArgs, '-e', probe], { timeoutMs: 120_000 });
    expect(loaded.stderr).toBe('');
    const [archLine, addonLine] = loaded.stdout.trim().split('\n');
    expect(archLine).toBe(`${arch === 'armhf' ? 'arm' : 'arm64'} ${path.join(path.dirname(bundle), 'node_modules/@serialport/bindings-cpp/prebuilds', prebuild)}`);
    expect(addonLine).toMatch(/^addon: .*(ioctl|baud)/i);
  }, 600_000);

  it('arm64: the agent enrolls with a relay on loopback and a TCP stream crosses it', async () => {
    const started = Date.now();
    const node = await prepareDebianNode(disposer, 'arm64');
    const http = await startHttpServer(disposer);
    const dir = await makeTempDir(disposer, 'portway-arm-cluster-');
    const cluster = await PortwayCluster.start({ dir, services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });
    disposer.add(() => cluster.stop(), 'stop cluster');
    await cluster.agent?.stop();

    // A new device with a fresh state dir, so the arm64 agent makes its key and enrolls itself.
    await cluster.writeAgentConfig({ name: 'pi-arm64', stateDir: path.join(dir, 'arm64-state') });
    const clusterReady = Date.now();
    const agent = new ManagedProcess(spawn(node.qemu, [...node.qemuArgs, bundle, '--config', cluster.agentConfigFile], { stdio: ['ignore', 'pipe', 'pipe'] }));
    cluster.children.add(agent);
    await agent.waitForLine(isEvent('agent.enroll.done'), EMULATED_START_MS, 'agent.enroll.done');
    await agent.waitForLine(isEvent('agent.control.online'), EMULATED_START_MS, 'agent.control.online');
    const online = Date.now();

    const { port } = await cluster.connect('web', 'pi-arm64');
    const curl = await runProcess(disposer, 'curl', ['-sS', '--max-time', '60', `http://127.0.0.1:${port}/hello`], { timeoutMs: 90_000 });
    expect(curl.stderr).toBe('');
    expect(curl.stdout).toBe(HELLO_TEXT);
    expect(agent.events('agent.stream.opened').length).toBeGreaterThanOrEqual(1);
    const streamed = Date.now();
    process.stdout.write(
      `arm64 agent: nodejs ready ${node.prepareMs} ms${node.cached ? ' (cached)' : ''}, cluster ${clusterReady - started - node.prepareMs} ms, ` +
        `start+enroll+online ${online - clusterReady} ms, first stream (connect + curl) ${streamed - online} ms, total ${streamed - started} ms\n`,
    );
    expect(await agent.stop('SIGTERM', 60_000)).toBe(0);
  }, 900_000);
});
