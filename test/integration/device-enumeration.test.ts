/**
 * No device enumeration oracle (issue 6, docs/reliability.md "Authorization"; test plan E1): for a user who may
 * not reach a device, "exists but forbidden" and "does not exist" give the same answer in the same time.
 * bob (a second user) opens data sockets straight to the relay with his certificate and asks for alice's pi1
 * (forbidden) and for a name nobody has (unknown), in pairs (one of each, in a seeded random order within the
 * pair, so a change of the machine's load hits both alike); the time measured is from writing CLIENT_OPEN on an
 * established outer TLS connection to reading RELAY_STATUS, so TLS handshakes do not blur it. Compared: the
 * median of the paired differences (forbidden - unknown), which must be near zero, and the plan's bound (E1:
 * medians within 50 ms). The relay now reads the user's shares once for every request (data-plane.ts
 * resolveDevice); before, a forbidden device cost one SQLite share lookup more, which this test could not tell
 * from noise (paired median +0.04-0.05 ms before, +0.03-0.04 ms after, 400 pairs on the loaded 2-core
 * machine): the resolution here is about 0.1 ms. On PostgreSQL the extra lookup was a network round trip.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { encodeFrame, encodePreamble, FrameType, MAX_FRAME_BYTES } from '../../protocol';
import { readFrame } from '../../shared/read-frame';
import { connectRelayDataSocket } from '../../shared/relay-data-socket';
import { TlsSessionCache } from '../../shared/tls-session-cache';
import type { PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, startCluster, startEchoServer } from '../helpers';
import { seededRandom } from '../helpers/chunking';

const PAIRS = Number(process.env.PORTWAY_ENUM_TRIES ?? 400);
const WARMUP = 20;
/** The largest median of the paired differences allowed (the noise of the median is about 0.05-0.1 ms). */
const MAX_PAIRED_DIFF_MS = 0.2;
/** Test plan E1: the same latency within 50 ms. */
const MAX_MEDIAN_DIFF_MS = 50;

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

describe('unknown and forbidden devices', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let secureContext: tls.SecureContext;

  beforeAll(async () => {
    const echo = await startEchoServer(suite);
    cluster = await startCluster(suite, { services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${echo.port}` }] });
    const bobToken = (await cluster.mustRun(['relay', 'user', 'add', 'bob', '--data', cluster.relayDir])).stdout.trim();
    const bobHome = await makeTempDir(suite, 'portway-bob-');
    const login = cluster.spawnCli(['login', '--relay', cluster.relayAddress, '--token', bobToken, '--fingerprint', cluster.caFingerprint], { XDG_CONFIG_HOME: bobHome });
    login.child.stdin?.end();
    expect(await login.exited).toBe(0);
    const f = (name: string): Promise<string> => fs.readFile(path.join(bobHome, 'portway', name), 'utf8');
    secureContext = tls.createSecureContext({ key: await f('user.key'), cert: await f('user.crt'), ca: await f('relay-ca.crt'), minVersion: 'TLSv1.3' });
  }, 90_000);
  afterAll(() => suite.run(), 30_000);

  /** One CLIENT_OPEN for `device` on a fresh outer connection: the answer and the time it took (ms). */
  async function ask(sessions: TlsSessionCache, device: string): Promise<{ ms: number; code: string; message: string }> {
    const outer = await connectRelayDataSocket({ host: '127.0.0.1', port: cluster.relayPort, secureContext, sessions, timeoutMs: 10_000 });
    try {
      const started = process.hrtime.bigint();
      outer.tls.write(Buffer.concat([encodePreamble(), encodeFrame(FrameType.CLIENT_OPEN, { device, service: 'web', prime: false })]), () => outer.carrier.handOffWrites());
      const frame = await readFrame(outer.tls, { expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, timeoutMs: 10_000 });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const payload = frame.payload as { ok: boolean; code?: string; message?: string };
      return { ms, code: String(payload.code), message: String(payload.message).replace(JSON.stringify(device), '"NAME"') };
    } finally {
      outer.tls.destroy();
      outer.raw.destroy();
    }
  }

  it(`same answer and the same time (${PAIRS} pairs): median of the paired differences within ${MAX_PAIRED_DIFF_MS} ms`, async () => {
    const sessions = new TlsSessionCache();
    const random = seededRandom(20261126);
    const names = { forbidden: 'pi1', unknown: 'pi9' } as const;
    for (let i = 0; i < WARMUP; i++) await ask(sessions, i % 2 === 0 ? names.forbidden : names.unknown);
    const times = { forbidden: [] as number[], unknown: [] as number[] };
    const diffs: number[] = [];
    const answers = { forbidden: new Set<string>(), unknown: new Set<string>() };
    for (let i = 0; i < PAIRS; i++) {
      const pair = random() < 0.5 ? (['forbidden', 'unknown'] as const) : (['unknown', 'forbidden'] as const);
      const ms = { forbidden: 0, unknown: 0 };
      for (const kind of pair) {
        const answer = await ask(sessions, names[kind]);
        ms[kind] = answer.ms;
        times[kind].push(answer.ms);
        answers[kind].add(`${answer.code}: ${answer.message}`);
      }
      diffs.push(ms.forbidden - ms.unknown);
    }
    const stats = (xs: number[]): { p10: number; median: number; p90: number } => {
      const s = [...xs].sort((a, b) => a - b);
      return { p10: round(quantile(s, 0.1)), median: round(quantile(s, 0.5)), p90: round(quantile(s, 0.9)) };
    };
    const forbidden = stats(times.forbidden);
    const unknown = stats(times.unknown);
    const paired = stats(diffs);
    const result = { pairs: PAIRS, forbidden, unknown, pairedDiffMs: paired, medianDiffMs: round(forbidden.median - unknown.median), answers: [...answers.forbidden, ...answers.unknown] };
    figure('unknown-vs-forbidden-device', result);
    expect({ forbidden: [...answers.forbidden], unknown: [...answers.unknown] }).toEqual({
      forbidden: ['PW_UNKNOWN_DEVICE: no device named "NAME"'],
      unknown: ['PW_UNKNOWN_DEVICE: no device named "NAME"'],
    });
    expect({ pairedMedian: Math.abs(paired.median) <= MAX_PAIRED_DIFF_MS, medians: Math.abs(result.medianDiffMs) <= MAX_MEDIAN_DIFF_MS }).toEqual({ pairedMedian: true, medians: true });
  }, 120_000);
});
