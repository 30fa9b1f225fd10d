/**
 * A simulated agent fleet in ONE process, for the relay memory benchmark: enrolls N devices with one
 * enroll key of N uses (POST /v1/enroll with a CSR for a fresh P-256 key each, as agent/src/identity.ts
 * does), then opens N MQTT-over-TLS control connections with the device certificates using the agent's
 * own ControlChannel (mutual TLS, ALPN mqtt, client id = device id, retained status and services, last
 * will, production keepalive). Nothing else: these agents open no data sockets.
 *
 * Run as a child process (`node dist/bench/fake-agents.js`), driven by JSON lines:
 *   stdin  line 1: {"relay":"127.0.0.1:PORT","caFingerprint":"...","enrollKey":"...","count":N,"concurrency":C}
 *                  (the enroll key is a secret, so it never goes on argv)
 *   stdout        {"event":"enrolled","count":N,"ms":...}
 *   stdin         "connect"
 *   stdout        {"event":"online","count":N,"failed":0,"ms":...}   (or {"event":"error","message":...})
 *   stdin         "status"
 *   stdout        {"event":"status","onlineNow":K}   (cheap: for polling while the fleet reconnects)
 *   stdin         "timeline"
 *   stdout        {"event":"timeline","online":[[i,t],...],"onlineNow":K}  every 'online' of device i since
 *                 connect, t in ms since the epoch (the reconnection storm test, test/integration/reliability-storm)
 *   stdin         "stop" or end of input -> offline status published, connections closed, exit 0
 * `timers` in the configuration overrides the agent's production timers (agentTimersSchema); the backoff code
 * is the agent's own (ControlChannel: full jitter, capped, reset only after a stable connection).
 */
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { ControlChannel } from '../agent/src/control/control-channel';
import { type AgentTimers, agentTimersSchema } from '../agent/src/config';
import { apiRequest } from '../shared/https-json';
import { silentLogger } from '../shared/logger';
import { fetchPinnedCa, parseHostPort } from '../shared/relay-trust';
import { createCsr, generateKeyPair } from '../shared/x509';

const API_TIMEOUT_MS = 15_000;
const ONLINE_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 15_000;
const MAX_AGENTS = 20_000;

export interface FakeFleetConfig {
  readonly relay: string;
  readonly caFingerprint: string;
  readonly enrollKey: string;
  readonly count: number;
  readonly concurrency: number;
  readonly timers?: Partial<AgentTimers>;
}

interface EnrolledDevice {
  readonly deviceId: string;
  readonly keyPem: string;
  readonly certPem: string;
}

/** Run `fn` over 0..count-1 with at most `concurrency` in flight. */
async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

export class FakeFleet {
  private readonly relay: { host: string; port: number };
  private relayCaPem = '';
  private readonly devices: EnrolledDevice[] = [];
  private readonly channels: ControlChannel[] = [];
  /** Every 'online' of every device: [device index, ms since the epoch]. */
  readonly onlineAt: [number, number][] = [];

  constructor(private readonly config: FakeFleetConfig) {
    if (!Number.isInteger(config.count) || config.count < 1 || config.count > MAX_AGENTS) throw new RangeError(`count must be 1-${MAX_AGENTS}`);
    this.relay = parseHostPort(config.relay);
  }

  async enroll(): Promise<void> {
    this.relayCaPem = await fetchPinnedCa(this.relay, this.config.caFingerprint, API_TIMEOUT_MS);
    await pool(this.config.count, this.config.concurrency, async (i) => {
      const name = `fake-${i}`;
      const { privateKeyPem } = generateKeyPair();
      const result = await apiRequest<{ deviceId: string; certificate: string }>({
        relay: this.relay,
        caPem: this.relayCaPem,
        method: 'POST',
        path: '/v1/enroll',
        body: { enrollKey: this.config.enrollKey, name, csr: createCsr({ privateKeyPem, commonName: name }) },
        timeoutMs: API_TIMEOUT_MS,
      });
      this.devices[i] = { deviceId: result.deviceId, keyPem: privateKeyPem, certPem: result.certificate };
    });
  }

  /** Connect every device; resolves with how many came online within the bound. */
  async connect(): Promise<{ online: number; failed: number }> {
    const timers = agentTimersSchema.parse(this.config.timers ?? {});
    const log = silentLogger();
    let online = 0;
    let failed = 0;
    await pool(this.devices.length, this.config.concurrency, async (i) => {
      const d = this.devices[i] as EnrolledDevice;
      const secureContext = tls.createSecureContext({ key: d.keyPem, cert: d.certPem, ca: this.relayCaPem, minVersion: 'TLSv1.3' });
      const channel = new ControlChannel({ log, now: Date.now }, { host: this.relay.host, port: this.relay.port, deviceId: d.deviceId, secureContext, services: [], version: 'bench-fake', timers });
      this.channels.push(channel);
      channel.on('online', () => this.onlineAt.push([i, Date.now()]));
      const isOnline = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ONLINE_TIMEOUT_MS);
        channel.once('online', () => {
          clearTimeout(timer);
          resolve(true);
        });
        channel.start();
      });
      if (isOnline) online++;
      else failed++;
    });
    return { online, failed };
  }

  onlineCount(): number {
    return this.channels.filter((c) => c.isOnline).length;
  }

  async stop(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(this.channels.map((c) => c.stop())),
      new Promise((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
  }
}

/** The child-process side of the protocol in the header. */
async function main(): Promise<void> {
  const emit = (event: Record<string, unknown>): void => {
    process.stdout.write(`${JSON.stringify(event)}\n`);
  };
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done) throw new Error('no configuration on stdin');
  const config = JSON.parse(first.value) as FakeFleetConfig;
  const fleet = new FakeFleet(config);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    fleet.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  let started = performance.now();
  await fleet.enroll();
  emit({ event: 'enrolled', count: config.count, ms: Math.round(performance.now() - started) });
  for (let line = await lines.next(); !line.done; line = await lines.next()) {
    if (line.value.trim() === 'connect') {
      started = performance.now();
      const result = await fleet.connect();
      emit({ event: 'online', count: result.online, failed: result.failed, ms: Math.round(performance.now() - started) });
    } else if (line.value.trim() === 'status') {
      emit({ event: 'status', onlineNow: fleet.onlineCount() });
    } else if (line.value.trim() === 'timeline') {
      emit({ event: 'timeline', online: fleet.onlineAt, onlineNow: fleet.onlineCount() });
    } else if (line.value.trim() === 'stop') break;
  }
  stop();
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stdout.write(`${JSON.stringify({ event: 'error', message: (err as Error).message })}\n`);
    process.exit(1);
  });
}
