/**
 * Every user-facing stream error end to end through the real `portway` CLI (relay, agent and client as
 * child processes): the exact one-line stderr `portway: CODE: message` and the exit status, from both
 * `portway pipe` and `portway connect`. `connect` primes a relay socket before listening, so everything the
 * relay decides (login, user, device, presence, service name) fails it at start; the device's own answer
 * (its service refusing) shows per connection. Then faults under live streams: the relay killed and
 * restarted on the same port, the forward proxy killed mid-stream, the agent killed mid-download.
 */
import http from 'node:http';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CliResult, ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { isEvent } from '../../devtools/portway-cluster';
import {
  Disposer,
  HELLO_TEXT,
  type TestTcpServer,
  collectBytes,
  connectTcp,
  findFreePort,
  makeTempDir,
  runProcess,
  startCluster,
  startEchoServer,
  startHttpServer,
  startTcpServer,
  waitFor,
} from '../helpers';

/** Exit status of the CLI for an operational failure (cli/portway.ts). */
const EXIT_FAILURE = 1;
const CLI_TIMEOUT_MS = 30_000;

/** Run the CLI with extra environment (another user's XDG_CONFIG_HOME) and collect its output. */
async function runCliWithEnv(cluster: PortwayCluster, args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const proc = cluster.spawnCli(args, env);
  proc.child.stdin?.end();
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), CLI_TIMEOUT_MS);
  try {
    const code = await proc.exited;
    return { code, stdout: proc.lines.join('\n'), stderr: proc.stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** `pipe` and `connect` for the same target must both fail with exactly `line` on stderr and status 1. */
async function expectStreamFailure(run: (args: readonly string[]) => Promise<CliResult>, device: string, service: string, line: string): Promise<void> {
  for (const command of ['pipe', 'connect']) {
    const result = await run([command, device, service]);
    expect({ command, code: result.code, stderr: result.stderr, stdout: result.stdout }).toEqual({ command, code: EXIT_FAILURE, stderr: `${line}\n`, stdout: '' });
  }
}

/** The next `event` line that `proc` logs after this call (earlier lines do not count). */
function nextEvent(proc: ManagedProcess, event: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const earlier = new Set(proc.lines.filter(isEvent(event)));
  return proc.waitForLine((line) => isEvent(event)(line) && !earlier.has(line), timeoutMs, event).then((line) => JSON.parse(line) as Record<string, unknown>);
}

/** `promise`, or a rejection naming `what` after `timeoutMs`. */
function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function httpGet(port: number, urlPath: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

describe('user-facing stream errors through the CLI', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let closedPort: number;

  beforeAll(async () => {
    const web = await startHttpServer(suite);
    // A port nothing listens on: the device's service refuses connections.
    closedPort = await findFreePort();
    cluster = await startCluster(suite, {
      services: [
        { name: 'web', type: 'tcp', target: `127.0.0.1:${web.port}` },
        { name: 'closed', type: 'tcp', target: `127.0.0.1:${closedPort}` },
      ],
    });
  }, 60_000);
  afterEach(() => disposer.run());
  afterAll(() => suite.run(), 30_000);

  const run = (args: readonly string[]): Promise<CliResult> => cluster.runCli(args, { timeoutMs: CLI_TIMEOUT_MS });

  it('a working stream first, so the errors below are not a broken setup', async () => {
    const result = await cluster.runCli(['pipe', 'pi1', 'web'], { input: 'GET /hello HTTP/1.0\r\n\r\n', timeoutMs: CLI_TIMEOUT_MS });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(HELLO_TEXT.trim());
  });

  it('unknown device: PW_UNKNOWN_DEVICE', async () => {
    await expectStreamFailure(run, 'nosuchdevice', 'web', 'portway: PW_UNKNOWN_DEVICE: no device named "nosuchdevice"');
  });

  it('service not exposed: PW_SERVICE_NOT_EXPOSED', async () => {
    await expectStreamFailure(run, 'pi1', 'ssh', 'portway: PW_SERVICE_NOT_EXPOSED: device pi1 does not expose a service named "ssh"');
  });

  it('device service refuses the connection: PW_SERVICE_REFUSED', async () => {
    const line = `portway: PW_SERVICE_REFUSED: connection refused by device service 127.0.0.1:${closedPort}`;
    expect(await run(['pipe', 'pi1', 'closed'])).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: `${line}\n` });
    // `connect` checks user, device and service name at start (on a primed relay socket) without touching the
    // device's service, so whether the service accepts shows per connection: the application's connection is
    // reset, and the reason is one line on stderr naming that connection.
    const { port, proc } = await cluster.connect('closed');
    disposer.add(() => proc.stop(), 'stop portway connect');
    const app = await connectTcp(disposer, { host: '127.0.0.1', port });
    const appPort = app.localPort as number;
    const bytes = collectBytes(app);
    app.write('GET / HTTP/1.0\r\n\r\n');
    const err = (await bytes.waitForClose(10_000)) as NodeJS.ErrnoException | null;
    expect({ error: err?.code, received: bytes.length }).toEqual({ error: 'ECONNRESET', received: 0 });
    await waitFor(() => proc.stderr.endsWith('\n'), { timeoutMs: 5_000, description: 'the connect error line' });
    expect(proc.stderr).toBe(`${line} (connection from 127.0.0.1:${appPort})\n`);
    const refused = (cluster.agent as ManagedProcess).events('agent.stream.refused');
    expect(refused.filter((e) => e.code === 'PW_SERVICE_REFUSED')).toHaveLength(2);
  });

  it("another user trying alice's device: the same PW_UNKNOWN_DEVICE as a device that does not exist", async () => {
    const bobToken = (await cluster.mustRun(['relay', 'user', 'add', 'bob', '--data', cluster.relayDir])).stdout.trim();
    const bobHome = await makeTempDir(disposer, 'portway-bob-');
    const asBob = (args: readonly string[]): Promise<CliResult> => runCliWithEnv(cluster, args, { XDG_CONFIG_HOME: bobHome });
    const login = await asBob(['login', '--relay', cluster.relayAddress, '--token', bobToken, '--fingerprint', cluster.caFingerprint]);
    expect(login.code).toBe(0);
    await expectStreamFailure(asBob, 'pi1', 'web', 'portway: PW_UNKNOWN_DEVICE: no device named "pi1"');
    // The device ID is no way around it either.
    const deviceId = JSON.parse(await fs.readFile(path.join(cluster.dir, 'agent-state', 'device.json'), 'utf8')) as { deviceId: string };
    await expectStreamFailure(asBob, deviceId.deviceId, 'web', `portway: PW_UNKNOWN_DEVICE: no device named "${deviceId.deviceId}"`);
  });

  it('no client settings: PW_NOT_LOGGED_IN', async () => {
    const emptyHome = await makeTempDir(disposer, 'portway-nobody-');
    const asNobody = (args: readonly string[]): Promise<CliResult> => runCliWithEnv(cluster, args, { XDG_CONFIG_HOME: emptyHome });
    await expectStreamFailure(asNobody, 'pi1', 'web', `portway: PW_NOT_LOGGED_IN: no client settings in ${path.join(emptyHome, 'portway')}; run "portway login" first`);
  });

  it('agent stopped: PW_DEVICE_OFFLINE', async () => {
    const relay = cluster.relay as ManagedProcess;
    const offline = nextEvent(relay, 'relay.device.offline', 15_000);
    expect(await (cluster.agent as ManagedProcess).stop('SIGTERM')).toBe(0);
    await offline;
    await expectStreamFailure(run, 'pi1', 'web', 'portway: PW_DEVICE_OFFLINE: device pi1 is offline');
  });
});

describe('agent and relay failures under a live stream', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let connectPort: number;
  let sink: TestTcpServer;

  beforeAll(async () => {
    const web = await startHttpServer(suite);
    const echo = await startEchoServer(suite);
    sink = await startTcpServer(suite);
    cluster = await startCluster(suite, {
      services: [
        { name: 'web', type: 'tcp', target: `127.0.0.1:${web.port}` },
        { name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` },
        { name: 'sink', type: 'tcp', target: `127.0.0.1:${sink.port}` },
      ],
    });
    connectPort = (await cluster.connect('web')).port;
  }, 60_000);
  afterEach(() => disposer.run());
  afterAll(() => suite.run(), 30_000);

  it('relay killed and restarted on the same port: the agent comes back by itself and new streams work', async () => {
    expect(await httpGet(connectPort, '/hello')).toEqual({ status: 200, body: HELLO_TEXT });
    const agent = cluster.agent as ManagedProcess;
    const disconnected = nextEvent(agent, 'agent.control.disconnected', 10_000);
    const online = nextEvent(agent, 'agent.control.online', 30_000);
    await (cluster.relay as ManagedProcess).stop('SIGKILL');
    await disconnected;
    const relay = await cluster.startRelay();
    expect((await online).reconnects).toBeGreaterThanOrEqual(1);
    // The relay learns the device is online from the agent's fresh status.
    await relay.waitForLine(isEvent('relay.device.online'), 10_000, 'relay.device.online');
    // The `portway connect` started before the restart opens new streams without being restarted.
    expect(await httpGet(connectPort, '/hello')).toEqual({ status: 200, body: HELLO_TEXT });
    const pipe = await cluster.runCli(['pipe', 'pi1', 'echo'], { input: 'after the restart\n', timeoutMs: CLI_TIMEOUT_MS });
    expect(pipe).toEqual({ code: 0, stdout: 'after the restart\n', stderr: '' });
  });

  it('forward proxy killed (SIGKILL) mid-stream: the device service sees a reset; the relay logs aborted', async () => {
    const relay = cluster.relay as ManagedProcess;
    const proxy = await cluster.connect('sink');
    disposer.add(() => proxy.proc.stop(), 'stop portway connect');
    const opened = nextEvent(relay, 'relay.stream.opened', 10_000);
    const app = await connectTcp(disposer, { host: '127.0.0.1', port: proxy.port });
    app.write('hello');
    const service = await sink.nextConnection(10_000);
    let serviceSawEnd = false;
    service.on('end', () => (serviceSawEnd = true));
    const received = collectBytes(service);
    await received.waitForLength(5, 10_000);
    const { streamId } = (await opened) as { streamId: string };
    const closed = relay.waitForLine((l) => isEvent('relay.stream.closed')(l) && l.includes(streamId), 10_000, 'relay.stream.closed');
    await proxy.proc.stop('SIGKILL');
    // The service has read everything it was sent, so its socket reports the reset as ECONNRESET.
    const err = await received.waitForClose(5_000);
    expect({ error: (err as NodeJS.ErrnoException | null)?.code, sawEnd: serviceSawEnd }).toEqual({ error: 'ECONNRESET', sawEnd: false });
    expect(JSON.parse(await closed)).toMatchObject({ streamId, outcome: 'aborted' });
  });

  it('agent killed (SIGKILL) mid-download: the application sees a reset, not a short clean EOF; the relay logs aborted', async () => {
    const relay = cluster.relay as ManagedProcess;
    const file = path.join(await makeTempDir(disposer, 'portway-download-'), 'bytes');
    const total = 1024 * 1024 * 1024;
    const opened = nextEvent(relay, 'relay.stream.opened', 10_000);
    // curl is the application: it tells a reset (exit 56, "Connection reset by peer") from a short clean end
    // (exit 18, "transfer closed with N bytes remaining"). A Node socket cannot be the judge here: libuv
    // reports a reset that arrives behind still-buffered data as a clean EOF.
    const download = runProcess(disposer, 'curl', ['-sS', '-o', file, `http://127.0.0.1:${connectPort}/bytes?n=${total}&seed=kill`], { timeoutMs: 60_000 });
    const { streamId } = (await opened) as { streamId: string };
    // Well into the body, and still flowing.
    await waitFor(async () => ((await fs.stat(file).catch(() => undefined))?.size ?? 0) >= 4 * 1024 * 1024, { timeoutMs: 15_000, intervalMs: 20, description: '4 MiB downloaded' });
    const closed = relay.waitForLine((l) => isEvent('relay.stream.closed')(l) && l.includes(streamId), 10_000, 'relay.stream.closed');
    await (cluster.agent as ManagedProcess).stop('SIGKILL');
    const result = await within(download, 5_000, 'curl to see the stream cut');
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 56, stderr: expect.stringMatching(/^curl: \(56\) .*reset by peer/) });
    expect((await fs.stat(file)).size).toBeLessThan(total);
    expect(JSON.parse(await closed)).toMatchObject({ streamId, outcome: 'aborted' });
    // Afterwards the device is offline (its last will), and says so.
    await relay.waitForLine(isEvent('relay.device.offline'), 15_000, 'relay.device.offline');
    const result2 = await cluster.runCli(['pipe', 'pi1', 'web'], { timeoutMs: CLI_TIMEOUT_MS });
    expect(result2).toEqual({ code: EXIT_FAILURE, stdout: '', stderr: 'portway: PW_DEVICE_OFFLINE: device pi1 is offline\n' });
  });
});
