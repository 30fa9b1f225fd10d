/** The user-side commands: login, devices, connect (forward proxy) and pipe (stdin/stdout). */
import { createPrivateKey } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { PortwayError } from '../../protocol';
import { pumpE2E } from '../../shared/e2e-pump';
import { apiRequest } from '../../shared/https-json';
import { fetchPinnedCa, parseHostPort } from '../../shared/relay-trust';
import { createCsr, generateKeyPair } from '../../shared/x509';
import type { DeviceView } from './device-report';
import { configDir, KnownDevices, loadSettings, saveSettings } from './settings';
import { StreamOpener } from './stream-opener';

const API_TIMEOUT_MS = 15_000;
const STREAM_TIMEOUT_MS = 15_000;
const CLOSE_GRACE_MS = 10_000;

export type { DeviceView } from './device-report';

export async function login(options: { relay: string; token: string; caFile?: string; fingerprint?: string }): Promise<{ userName: string; dir: string }> {
  const relay = parseHostPort(options.relay);
  let relayCaPem: string;
  if (options.caFile) relayCaPem = await fs.readFile(options.caFile, 'utf8');
  else if (options.fingerprint) relayCaPem = await fetchPinnedCa(relay, options.fingerprint, API_TIMEOUT_MS);
  else throw new PortwayError('PW_CONFIG_INVALID', 'give --ca FILE or --fingerprint SHA256 so the relay can be verified');
  // Logging in again keeps this machine's key: claimed devices pinned it as their owner's key.
  const dir = configDir();
  const keys = { privateKeyPem: (await readKey(path.join(dir, 'user.key'))) ?? generateKeyPair().privateKeyPem };
  const result = await apiRequest<{ userId: string; userName: string; certificate: string; caCertificate: string }>({
    relay,
    caPem: relayCaPem,
    method: 'POST',
    path: '/v1/login',
    token: options.token,
    body: { csr: createCsr({ privateKeyPem: keys.privateKeyPem, commonName: 'portway-user' }) },
    timeoutMs: API_TIMEOUT_MS,
  });
  await saveSettings(dir, { relayText: options.relay, userId: result.userId, userName: result.userName, token: options.token, keyPem: keys.privateKeyPem, certPem: result.certificate, caPem: result.caCertificate, relayCaPem });
  return { userName: result.userName, dir };
}

/** This machine's user key, when it has one that parses. */
async function readKey(file: string): Promise<string | undefined> {
  try {
    const pem = await fs.readFile(file, 'utf8');
    createPrivateKey(pem);
    return pem;
  } catch {
    // ENOENT on the first login, or a damaged key (createPrivateKey throws): either way a new key is made.
    return undefined;
  }
}

export async function listDevices(): Promise<DeviceView[]> {
  const s = await loadSettings(configDir());
  const result = await apiRequest<{ devices: DeviceView[] }>({ relay: s.relay, caPem: s.relayCaPem, method: 'GET', path: '/v1/devices', token: s.token, timeoutMs: API_TIMEOUT_MS });
  return result.devices;
}

/** One device by name or ID, with its latest telemetry. */
export async function showDevice(device: string): Promise<DeviceView> {
  const s = await loadSettings(configDir());
  return apiRequest<DeviceView>({ relay: s.relay, caPem: s.relayCaPem, method: 'GET', path: `/v1/devices/${encodeURIComponent(device)}`, token: s.token, timeoutMs: API_TIMEOUT_MS });
}

async function opener(device: string, service: string, primed: number): Promise<StreamOpener> {
  const settings = await loadSettings(configDir());
  const known = await KnownDevices.load(settings.dir);
  return new StreamOpener({ settings, known }, { device, service }, { timeoutMs: STREAM_TIMEOUT_MS, primed });
}

export interface ForwardProxy {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/**
 * `portway connect`: listen locally; each accepted connection gets its own end-to-end stream. A first
 * socket is primed before listening so a wrong device or service fails at once with its reason.
 */
export async function connect(
  options: { device: string; service: string; listen: { host: string; port: number }; primed?: number },
  report: { error(err: PortwayError, remote: string): void; stream?(outcome: string): void },
): Promise<ForwardProxy> {
  const streams = await opener(options.device, options.service, options.primed ?? 2);
  // Prime the first socket before listening: the relay checks user, device, presence and service, so a
  // wrong name or an offline device fails here with its reason, without touching the device's service.
  await streams.primeNow();
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (local) => {
    sockets.add(local);
    local.once('close', () => sockets.delete(local));
    local.on('error', () => {
      // The pump reports local failures; before it starts they only end this connection.
    });
    local.pause();
    const remote = `${local.remoteAddress ?? '?'}:${local.remotePort ?? '?'}`;
    streams.open({ awaitStatus: false }).then(
      (stream) => {
        local.resume();
        return pumpE2E(stream.inner, local, { closeGraceMs: CLOSE_GRACE_MS, expectStatus: true, transport: stream.raw }).then((r) => {
          if (r.error) report.error(r.error, remote);
          report.stream?.(r.outcome);
        });
      },
      (err: unknown) => {
        report.error(err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', String(err)), remote);
        local.resetAndDestroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new PortwayError('PW_BAD_REQUEST', `cannot listen on ${options.listen.host}:${options.listen.port}: ${err.code ?? err.message}`)));
    server.listen(options.listen.port, options.listen.host, () => resolve());
  });
  streams.refill();
  const address = server.address() as net.AddressInfo;
  return {
    address: { host: address.address, port: address.port },
    close: async () => {
      streams.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** `portway pipe`: one stream on stdin/stdout (for ssh ProxyCommand). Resolves true when it ended cleanly; rejects with PW_E2E_INTEGRITY. */
export async function pipe(options: { device: string; service: string }, stdio: { stdin: NodeJS.ReadableStream; stdout: NodeJS.WritableStream }): Promise<boolean> {
  const streams = await opener(options.device, options.service, 0);
  const stream = await streams.open();
  const local = Duplex.from({ readable: stdio.stdin, writable: stdio.stdout });
  const result = await pumpE2E(stream.inner, local, { closeGraceMs: CLOSE_GRACE_MS, transport: stream.raw, ...(stream.heartbeatMs !== undefined ? { heartbeatMs: stream.heartbeatMs } : {}) });
  if (result.error) throw result.error; // PW_E2E_INTEGRITY: the refusals came with the status, in open()
  return result.outcome === 'complete';
}

export function parseListen(spec: string | undefined): { host: string; port: number } {
  if (spec === undefined) return { host: '127.0.0.1', port: 0 };
  const m = /^(?:(?:\[([^\]]+)\]|([^:]+)):)?(\d{1,5})$/.exec(spec);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new PortwayError('PW_BAD_REQUEST', `-L expects [ADDR:]PORT, got ${JSON.stringify(spec).slice(0, 60)}`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}
