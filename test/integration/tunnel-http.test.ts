/**
 * Real HTTP through the tunnel (curl and node's http client -> `portway connect` -> relay -> agent -> the
 * test HTTP server), and the order in which a stream's two ends close (service first, client first), all
 * with real processes on loopback. After the streams end, each one the relay paired must be closed at the
 * relay (`relay.stream.closed`) and at the agent (`agent.stream.closed`), with outcome `complete`.
 *
 * `portway connect` primes a relay socket before it listens (to report a wrong device or service at
 * once) without opening a stream, so every stream paired is the test's own and is checked.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pseudoRandomBytes } from '../../devtools';
import type { ClusterOptions, ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { collectBytes, connectTcp, Disposer, HELLO_TEXT, makeTempDir, runProcess, startCluster, startHttpServer, startTcpServer, waitFor } from '../helpers';

const MIB = 1024 * 1024;
const CONCURRENT_STREAMS = 200;
const ECHO_BYTES = 1 * MIB;
const CURL_UPLOAD_BYTES = 4 * MIB;
const DOWNLOAD_BYTES = 1 * MIB;
const CURL_TIMEOUT_MS = 20_000;
const LOG_TIMEOUT_MS = 20_000;
const IO_TIMEOUT_MS = 10_000;

jest.setTimeout(90_000);

/**
 * The agent's and relay's own timer defaults (empty objects: the schemas fill them in) instead of the fast
 * test profile. A burst of 200 streams saturates a 2-core machine, and then opening a stream (MQTT dial,
 * the agent's data socket TLS handshake, the inner handshake) takes seconds, measured up to ~7.5 s with
 * other load on the machine: beyond the fast profile's 3 s connect and 5 s dial bounds, within the
 * production ones. What is checked does not change.
 */
const PRODUCTION_TIMERS = { agentTimers: {}, relayConfig: {} } satisfies Partial<ClusterOptions>;

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

interface Forward {
  readonly port: number;
  /** The `portway connect` process. */
  readonly proc: ManagedProcess;
  /** Stream IDs paired before the test's own traffic (the probe of `portway connect`). */
  readonly before: ReadonlySet<string>;
}

/** `portway connect` to `service`; resolves once its probe stream has come and gone at relay and agent. */
async function forward(cluster: PortwayCluster, service: string): Promise<Forward> {
  const { port, proc } = await cluster.connect(service);
  const relay = cluster.relay!;
  const agent = cluster.agent!;
  // Priming contacts neither the agent's services nor the pairing: no stream exists yet.
  expect(relay.events('relay.stream.opened')).toHaveLength(0);
  expect(agent.events('agent.stream.opened')).toHaveLength(0);
  return { port, proc, before: new Set<string>() };
}

/**
 * Exactly `count` streams were paired since `before`, and each was closed, at the relay and at the
 * agent, with outcome `complete`. Returns their stream IDs.
 */
async function expectStreamsComplete(cluster: PortwayCluster, before: ReadonlySet<string>, count: number): Promise<string[]> {
  const relay = cluster.relay!;
  const agent = cluster.agent!;
  const opened = (): string[] => relay.events('relay.stream.opened').map((e) => e.streamId as string).filter((id) => !before.has(id));
  await waitFor(() => opened().length >= count, { timeoutMs: LOG_TIMEOUT_MS, description: `${count} relay.stream.opened` });
  const ids = opened();
  if (ids.length !== count) {
    // Say what the extra streams were (a retried primed stream, a refusal ...), not just how many.
    await new Promise((r) => setTimeout(r, 2_000));
    const notComplete = relay.events('relay.stream.closed').filter((e) => ids.includes(e.streamId as string) && e.outcome !== 'complete');
    const agentSide = agent.events('agent.stream.refused').concat(agent.events('agent.stream.closed').filter((e) => e.outcome !== 'complete'));
    throw new Error(`${ids.length} streams paired, expected ${count}; not complete at the relay: ${JSON.stringify(notComplete)}; agent: ${JSON.stringify(agentSide.slice(0, 5))}`);
  }
  const wanted = new Set(ids);
  const closedIn = (events: Record<string, unknown>[]): Record<string, unknown>[] => events.filter((e) => wanted.has(e.streamId as string));
  await waitFor(() => closedIn(relay.events('relay.stream.closed')).length >= count && closedIn(agent.events('agent.stream.closed')).length >= count, {
    timeoutMs: LOG_TIMEOUT_MS,
    description: `${count} relay.stream.closed and agent.stream.closed`,
  });
  const outcomes = (events: Record<string, unknown>[]): Record<string, unknown>[] =>
    closedIn(events)
      .map((e) => ({ streamId: e.streamId, outcome: e.outcome, ...(e.reason === undefined ? {} : { reason: e.reason }) }))
      .sort((a, b) => String(a.streamId).localeCompare(String(b.streamId)));
  const complete = [...ids].sort().map((streamId) => ({ streamId, outcome: 'complete' }));
  expect(outcomes(relay.events('relay.stream.closed'))).toEqual(complete);
  expect(outcomes(agent.events('agent.stream.closed'))).toEqual(complete);
  return ids;
}

interface EchoResult {
  readonly status: number | undefined;
  readonly headerSha256: unknown;
  readonly bodySha256: string;
  readonly bodyBytes: number;
}

/** POST `body` to /echo over its own connection (no keep-alive agent); hashes the echoed body as it streams. */
function postEcho(port: number, body: Buffer, signal: AbortSignal, requests: Set<http.ClientRequest>): Promise<EchoResult> {
  return new Promise<EchoResult>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: '/echo', agent: false, signal, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } },
      (res) => {
        const hash = createHash('sha256');
        let bodyBytes = 0;
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          bodyBytes += chunk.length;
        });
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode, headerSha256: res.headers['x-body-sha256'], bodySha256: hash.digest('hex'), bodyBytes }));
      },
    );
    requests.add(req);
    req.on('close', () => requests.delete(req));
    req.on('error', reject);
    req.end(body);
  });
}

describe('HTTP through the tunnel', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function startWeb(timers: Partial<ClusterOptions> = {}): Promise<{ cluster: PortwayCluster; fwd: Forward }> {
    const server = await startHttpServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'web', type: 'tcp', target: `${server.host}:${server.port}` }], ...timers });
    return { cluster, fwd: await forward(cluster, 'web') };
  }

  it('curl: GET /hello, and a 4 MiB POST to /echo comes back intact', async () => {
    const { cluster, fwd } = await startWeb();
    const dir = await makeTempDir(disposer, 'portway-curl-');
    const base = `http://127.0.0.1:${fwd.port}`;

    const hello = await runProcess(disposer, 'curl', ['-sS', '--fail', '--max-time', '15', `${base}/hello`], { timeoutMs: CURL_TIMEOUT_MS });
    expect(hello.stderr).toBe('');
    expect(hello.stdout).toBe(HELLO_TEXT);

    const upload = pseudoRandomBytes('curl-upload', CURL_UPLOAD_BYTES);
    const uploadFile = path.join(dir, 'upload.bin');
    const echoedFile = path.join(dir, 'echoed.bin');
    await fs.writeFile(uploadFile, upload);
    const echo = await runProcess(
      disposer,
      'curl',
      ['-sS', '--fail', '--max-time', '15', '-H', 'content-type: application/octet-stream', '--data-binary', `@${uploadFile}`, '-o', echoedFile, '-D', '-', `${base}/echo`],
      { timeoutMs: CURL_TIMEOUT_MS },
    );
    expect(echo.code).toBe(0);
    expect(echo.stdout).toMatch(/^HTTP\/1\.1 200 /m);
    expect(/^x-body-sha256: ([0-9a-f]{64})\r?$/im.exec(echo.stdout)?.[1]).toBe(sha256(upload));
    expect((await fs.readFile(echoedFile)).equals(upload)).toBe(true);

    await expectStreamsComplete(cluster, fwd.before, 2);
  });

  it('curl downloads 1 MiB from /bytes, equal to the deterministic generator', async () => {
    const { cluster, fwd } = await startWeb();
    const dir = await makeTempDir(disposer, 'portway-curl-');
    const file = path.join(dir, 'download.bin');
    const seed = 'tunnel-download';
    const result = await runProcess(disposer, 'curl', ['-sS', '--fail', '--max-time', '15', '-o', file, `http://127.0.0.1:${fwd.port}/bytes?n=${DOWNLOAD_BYTES}&seed=${seed}`], {
      timeoutMs: CURL_TIMEOUT_MS,
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    const downloaded = await fs.readFile(file);
    expect(downloaded.length).toBe(DOWNLOAD_BYTES);
    expect(downloaded.equals(pseudoRandomBytes(seed, DOWNLOAD_BYTES))).toBe(true);
    await expectStreamsComplete(cluster, fwd.before, 1);
  });

  it(`${CONCURRENT_STREAMS} concurrent streams each echo a distinct 1 MiB body intact`, async () => {
    const { cluster, fwd } = await startWeb(PRODUCTION_TIMERS);
    const requests = new Set<http.ClientRequest>();
    disposer.add(() => {
      for (const req of requests) req.destroy();
    }, 'destroy http requests');
    const signal = AbortSignal.timeout(60_000);
    setMaxListeners(CONCURRENT_STREAMS + 10, signal); // one abort listener per request

    const expected = Array.from({ length: CONCURRENT_STREAMS }, (_, i) => pseudoRandomBytes(`echo-${i}`, ECHO_BYTES));
    const settled = await Promise.allSettled(expected.map((body) => postEcho(fwd.port, body, signal, requests)));

    const failures = settled.flatMap((s, i) => (s.status === 'rejected' ? [`#${i}: ${String((s.reason as Error)?.message ?? s.reason)}`] : []));
    // The forward proxy prints one line per stream it could not open, with its code (PW_DIAL_TIMEOUT, ...).
    const proxyErrors = fwd.proc.stderr.split('\n').filter((line) => line !== '').slice(0, 10);
    expect({ failures, proxyErrors }).toEqual({ failures: [], proxyErrors: [] });
    const results = settled.map((s) => (s as PromiseFulfilledResult<EchoResult>).value);
    const summary = (r: EchoResult, body: Buffer): unknown => ({ status: r.status, headerSha256: r.headerSha256, bodySha256: r.bodySha256, bodyBytes: r.bodyBytes, sent: sha256(body) });
    const bad = results.flatMap((r, i) => {
      const want = sha256(expected[i]!);
      const ok = r.status === 200 && r.headerSha256 === want && r.bodySha256 === want && r.bodyBytes === ECHO_BYTES;
      return ok ? [] : [{ index: i, ...(summary(r, expected[i]!) as object) }];
    });
    expect(bad).toEqual([]);

    await expectStreamsComplete(cluster, fwd.before, CONCURRENT_STREAMS);
  });
});

describe('stream close ordering', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  const GREETING = Buffer.from('220 device service ready\n');
  const SERVICE_DATA = pseudoRandomBytes('service-first', 512 * 1024);

  async function startRaw(): Promise<{ cluster: PortwayCluster; fwd: Forward; server: Awaited<ReturnType<typeof startTcpServer>> }> {
    const server = await startTcpServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'raw', type: 'tcp', target: `${server.host}:${server.port}` }] });
    const fwd = await forward(cluster, 'raw');
    return { cluster, fwd, server };
  }

  it('the service closes first: the client gets every byte, then a clean EOF, and can still send', async () => {
    const { cluster, fwd, server } = await startRaw();
    const client = await connectTcp(disposer, { host: '127.0.0.1', port: fwd.port });
    const fromService = collectBytes(client);
    const service = await server.nextConnection(IO_TIMEOUT_MS);
    const fromClient = collectBytes(service);

    service.end(Buffer.concat([GREETING, SERVICE_DATA]));
    const received = await fromService.waitForEnd(IO_TIMEOUT_MS);
    expect(fromService.state).toBe('ended'); // EOF, not a reset or close
    expect(fromService.error).toBeNull();
    expect(received.equals(Buffer.concat([GREETING, SERVICE_DATA]))).toBe(true);

    // Half-closed: the client's direction still works after the service's EOF.
    client.end('bye\n');
    expect((await fromClient.waitForEnd(IO_TIMEOUT_MS)).toString()).toBe('bye\n');
    expect(fromClient.error).toBeNull();
    expect(await fromService.waitForClose(IO_TIMEOUT_MS)).toBeNull();
    expect(await fromClient.waitForClose(IO_TIMEOUT_MS)).toBeNull();

    await expectStreamsComplete(cluster, fwd.before, 1);
  });

  it('the client closes first: the service sees EOF and can still answer', async () => {
    const { cluster, fwd, server } = await startRaw();
    const client = await connectTcp(disposer, { host: '127.0.0.1', port: fwd.port });
    const fromService = collectBytes(client);
    const request = pseudoRandomBytes('client-first', 256 * 1024);
    client.end(request); // before the stream is even open: the proxy must keep the bytes and the EOF

    const service = await server.nextConnection(IO_TIMEOUT_MS);
    const fromClient = collectBytes(service);
    const got = await fromClient.waitForEnd(IO_TIMEOUT_MS);
    expect(fromClient.state).toBe('ended');
    expect(fromClient.error).toBeNull();
    expect(got.equals(request)).toBe(true);

    // The service answers after the client's EOF (like a server that reads the whole request first).
    service.end(`got ${sha256(got)}\n`);
    expect((await fromService.waitForEnd(IO_TIMEOUT_MS)).toString()).toBe(`got ${sha256(request)}\n`);
    expect(fromService.error).toBeNull();
    expect(await fromService.waitForClose(IO_TIMEOUT_MS)).toBeNull();
    expect(await fromClient.waitForClose(IO_TIMEOUT_MS)).toBeNull();

    await expectStreamsComplete(cluster, fwd.before, 1);
  });
});
