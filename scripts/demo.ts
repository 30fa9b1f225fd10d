/**
 * `npm run demo`: a whole Portway deployment on this machine, on loopback, with nothing to configure.
 *
 * In a private temp dir it starts a sample HTTP service (standing in for a service on a device), a relay
 * (its own CA and store), a user, a device agent enrolled with a fleet key that exposes the sample
 * service, and a logged-in client; then `portway connect`, one real HTTP request through the tunnel
 * (printing each hop it crossed and the response), and `portway devices`. Every Portway part is the real
 * `portway` program run as a child process (devtools/portway-cluster.ts).
 *
 * Everything is stopped and the temp dir removed at the end, on an error, and on Ctrl-C (a second Ctrl-C
 * removes the temp dir and exits at once). Exit status: 0 success, 1 failure, 130 interrupted.
 */
import { rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isEvent, makeTempDir, PortwayCluster, type ManagedProcess, type TempDir } from '../devtools';

const DEVICE = 'pi1';
const SERVICE = 'web';
const SAMPLE_TEXT = 'Hello from the sample service on the device!';
const REQUEST_TIMEOUT_MS = 15_000;
const LOG_WAIT_MS = 5_000;

const abort = new AbortController();
let tempDir: TempDir | undefined;

function say(line = ''): void {
  process.stdout.write(`${line}\n`);
}

function step(n: number, text: string): void {
  say(`[${n}/6] ${text}`);
}

/** A sample HTTP service on 127.0.0.1:0 that remembers who asked it what. */
async function startSampleService(): Promise<{ port: number; requests: { line: string; from: string }[]; close(): Promise<void> }> {
  const requests: { line: string; from: string }[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ line: `${req.method ?? '?'} ${req.url ?? '?'} HTTP/${req.httpVersion}`, from: `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}` });
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`${SAMPLE_TEXT}\n`);
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** GET a URL with a deadline; resolves with the status line and the body. */
function httpGet(url: string, signal: AbortSignal): Promise<{ status: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: `HTTP/${res.httpVersion} ${res.statusCode ?? '?'} ${res.statusMessage ?? ''}`.trim(), body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** The value of `field` in the first JSON log line of `proc` whose msg is `event` and that matches `where`. */
async function logField(proc: ManagedProcess | undefined, event: string, field: string, where: (json: Record<string, unknown>) => boolean = () => true): Promise<string> {
  if (!proc) return '?';
  const line = await proc.waitForLine((l) => isEvent(event)(l) && where(JSON.parse(l) as Record<string, unknown>), LOG_WAIT_MS, event).catch(() => undefined);
  if (!line) return '?';
  const value = (JSON.parse(line) as Record<string, unknown>)[field];
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function checkInterrupted(): void {
  if (abort.signal.aborted) throw new Error('interrupted');
}

async function run(): Promise<void> {
  say('Portway demo: a relay, a device agent and a client, all on this machine (127.0.0.1).');
  say();

  tempDir = await makeTempDir('portway-demo-');
  const sample = await startSampleService();
  let cluster: PortwayCluster | undefined;
  let isDone = false;
  try {
    step(1, `sample HTTP service (stands in for a service on the device): http://127.0.0.1:${sample.port}/`);
    say(`      working directory: ${tempDir.path}`);
    say('      starting the relay, adding a user, enrolling a device, logging the client in ...');
    cluster = await PortwayCluster.start({ dir: tempDir.path, deviceName: DEVICE, services: [{ name: SERVICE, type: 'tcp', target: `127.0.0.1:${sample.port}` }] });
    checkInterrupted();
    const deviceId = await logField(cluster.agent, 'agent.started', 'deviceId');
    step(2, `relay: portway relay init + serve, listening on ${cluster.relayAddress} (one TLS port: MQTT, data sockets, HTTP API by ALPN)`);
    say(`      CA fingerprint (SHA-256): ${cluster.caFingerprint}`);
    step(3, `user "alice" added (portway relay user add); API token ${cluster.token.slice(0, 8)}... ; fleet enrollment key created for her devices`);
    step(4, `device "${DEVICE}" (${deviceId}) enrolled and online over MQTT; its agent exposes ${SERVICE} -> 127.0.0.1:${sample.port}`);
    say(`      client logged in as alice (portway login); settings in ${cluster.configHome}/portway`);

    const { port } = await cluster.connect(SERVICE, DEVICE);
    checkInterrupted();
    step(5, `portway connect ${DEVICE} ${SERVICE}: forward proxy listening on 127.0.0.1:${port}`);

    const url = `http://127.0.0.1:${port}/`;
    const response = await httpGet(url, abort.signal);
    const streamId = await logField(cluster.relay, 'relay.stream.opened', 'streamId');
    const agentSaw = await logField(cluster.agent, 'agent.stream.opened', 'streamId', (j) => j.streamId === streamId);
    const seen = sample.requests[sample.requests.length - 1];
    step(6, `one HTTP request through the tunnel: GET ${url}`);
    const hops: [string, string, string][] = [
      ['hop 1', `HTTP client   -> forward proxy 127.0.0.1:${port}`, 'plain TCP on this machine'],
      ['hop 2', `forward proxy -> relay ${cluster.relayAddress}`, `outer TLS 1.3 for the request (ALPN portway-data/1, user certificate), stream ${streamId}`],
      ['hop 3', `relay         -> agent on ${DEVICE}`, `outer TLS 1.3 for the request (device certificate), the agent ran stream ${agentSaw}`],
      ['', 'forward proxy <=> agent', 'inner TLS 1.3 end to end: the relay only forwards ciphertext'],
      ['hop 4', `agent         -> sample service 127.0.0.1:${sample.port}`, `plain TCP on the device; it saw "${seen?.line ?? '?'}" from ${seen?.from ?? '?'}`],
    ];
    const width = Math.max(...hops.map((h) => h[1].length));
    for (const [name, path, how] of hops) say(`      ${name.padEnd(5)}  ${path.padEnd(width)}  ${how}`);
    say(`response: ${response.status} "${response.body.trim()}"`);
    if (!response.status.includes(' 200') || response.body.trim() !== SAMPLE_TEXT) throw new Error(`unexpected response: ${response.status}`);

    const devices = await cluster.runCli(['devices']);
    if (devices.code !== 0) throw new Error(`portway devices failed (${String(devices.code)}): ${devices.stderr.trim()}`);
    say();
    say('portway devices:');
    for (const line of devices.stdout.trimEnd().split('\n')) say(`      ${line}`);
    say();
    isDone = true;
  } finally {
    say('stopping the forward proxy, agent and relay; removing the working directory ...');
    // Each step runs even if one before it failed; the first failure is reported after all of them.
    const results = await Promise.allSettled([cluster?.stop(), sample.close()]);
    results.push(...(await Promise.allSettled([tempDir.remove()])));
    tempDir = undefined;
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed && isDone) throw failed.reason;
    if (failed) process.stderr.write(`clean-up failed too: ${String(failed.reason)}\n`);
  }
  say('demo finished: OK');
}

function onSignal(signal: NodeJS.Signals): void {
  if (abort.signal.aborted) {
    // Second signal: do not wait for the orderly stop.
    if (tempDir) rmSync(tempDir.path, { recursive: true, force: true });
    process.exit(130);
  }
  process.stderr.write(`\n${signal}: stopping (again to quit at once) ...\n`);
  abort.abort();
}

process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

run().then(
  () => process.exit(0),
  (err: unknown) => {
    const interrupted = abort.signal.aborted;
    process.stderr.write(interrupted ? 'demo interrupted\n' : `demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(interrupted ? 130 : 1);
  },
);
