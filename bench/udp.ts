/**
 * Section udp: datagrams per second and loss, iperf3 -u at an unlimited offered rate (-b 0) for 64-byte and
 * 1,200-byte datagrams, direct to the iperf3 server and through Portway (`portway connect --udp` for the
 * data, a TCP `portway connect` for iperf3's control connection on the same port number), in the same run,
 * interleaved. Figure = datagrams received per second by the server (iperf3's own count) and the share of
 * sent datagrams lost, median of the runs. With -b 0 the sender outruns every path, so the loss is what a
 * path sheds at saturation, and the rate is the most it delivers.
 */
import { PortwayCluster } from '../devtools';
import type { BenchContext } from './context';
import { DEVICE_NAME } from './environment';
import { fmt, type ResultRow } from './report';
import { median } from './stats';
import { spawnTracked } from './teardown';

const SIZES = [64, 1200] as const;
const CLIENT_SLACK_MS = 20_000;
const BUSY_ATTEMPTS = 5;
const BUSY_RETRY_MS = 1_000;

interface UdpRun {
  readonly path: 'direct' | 'portway';
  readonly size: number;
  readonly dps?: number;
  readonly lossPct?: number;
  readonly error?: string;
}

export async function runUdp(ctx: BenchContext): Promise<ResultRow[]> {
  const { env, options } = ctx;
  const iperf = await env.iperf();
  const dir = await env.dir();
  const cluster = await PortwayCluster.start({
    dir: `${dir}/udp-cluster`,
    deviceName: DEVICE_NAME,
    services: [
      { name: 'iperf-ctl', type: 'tcp', target: `127.0.0.1:${iperf.port}` },
      { name: 'iperf-udp', type: 'udp', target: `127.0.0.1:${iperf.port}` },
    ],
  });
  ctx.teardown.add('udp cluster', () => cluster.stop());
  const ctl = await cluster.connect('iperf-ctl');
  const data = await cluster.connectUdp('iperf-udp', ['-L', `127.0.0.1:${ctl.port}`]);
  ctx.teardown.add('udp connect', async () => void (await data.proc.stop()));
  const seconds = Math.min(options.iperfSeconds, 3);
  const runs: UdpRun[] = [];
  for (let rep = 0; rep < options.reps; rep++) {
    for (const size of SIZES) {
      for (const [path, port] of [['direct', iperf.port], ['portway', ctl.port]] as const) {
        ctx.signal.throwIfAborted();
        ctx.progress(`udp ${size} B ${path}`);
        runs.push({ path, size, ...(await iperfUdpWhenFree(ctx, port, size, seconds)) });
      }
    }
  }
  ctx.record('udp', { seconds, runs });
  const rows: ResultRow[] = [];
  for (const size of SIZES) {
    const figure = (path: UdpRun['path']): { dps?: number; lossPct?: number; errors: string[] } => {
      const ok = runs.filter((r) => r.path === path && r.size === size && r.dps !== undefined);
      return { dps: ok.length ? median(ok.map((r) => r.dps as number)) : undefined, lossPct: ok.length ? median(ok.map((r) => r.lossPct as number)) : undefined, errors: runs.filter((r) => r.path === path && r.size === size && r.error).map((r) => r.error as string) };
    };
    const direct = figure('direct');
    const portway = figure('portway');
    for (const [label, f] of [['direct loopback', direct], ['Portway', portway]] as const) {
      rows.push({
        section: 'udp',
        measurement: `iperf3 -u -b 0, ${size} B datagrams, ${seconds} s`,
        path: label,
        result: f.dps === undefined ? `failed: ${f.errors[0] ?? '?'}` : `${fmt(f.dps / 1000, 1)} k datagrams/s, loss ${fmt(f.lossPct, 1)} %`,
        values: { datagramsPerSecond: f.dps, lossPercent: f.lossPct },
        comparison: label === 'Portway' && direct.dps && portway.dps ? `${fmt((portway.dps / direct.dps) * 100, 0)} % of direct` : undefined,
      });
    }
  }
  return rows;
}

/**
 * iperf3's server runs one test at a time and answers "the server is busy running a test" while it is still
 * ending the previous one (after a run through Portway its control stream takes a moment to close): wait and
 * try again, at most BUSY_ATTEMPTS times.
 */
async function iperfUdpWhenFree(ctx: BenchContext, port: number, size: number, seconds: number): Promise<{ dps?: number; lossPct?: number; error?: string }> {
  let result = await iperfUdp(ctx, port, size, seconds);
  for (let attempt = 1; attempt < BUSY_ATTEMPTS && result.error !== undefined && /server is busy/.test(result.error); attempt++) {
    ctx.progress(`udp ${size} B: iperf3 server busy, retrying in ${BUSY_RETRY_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    result = await iperfUdp(ctx, port, size, seconds);
  }
  return result;
}

async function iperfUdp(ctx: BenchContext, port: number, size: number, seconds: number): Promise<{ dps?: number; lossPct?: number; error?: string }> {
  const proc = spawnTracked(ctx.teardown, 'iperf3', ['-c', '127.0.0.1', '-p', String(port), '-u', '-b', '0', '-l', String(size), '-t', String(seconds), '-J', '--connect-timeout', '5000']);
  const timer = setTimeout(() => void proc.stop(), seconds * 1000 + CLIENT_SLACK_MS);
  const { code } = await proc.exited;
  clearTimeout(timer);
  try {
    const json = JSON.parse(proc.stdout()) as { error?: string; end?: { sum?: { packets?: number; lost_packets?: number; lost_percent?: number; seconds?: number } } };
    const sum = json.end?.sum;
    if (json.error || code !== 0 || sum?.packets === undefined || !sum.seconds) return { error: json.error ?? `iperf3 exited ${String(code)}` };
    return { dps: (sum.packets - (sum.lost_packets ?? 0)) / sum.seconds, lossPct: sum.lost_percent ?? 0 };
  } catch {
    return { error: `iperf3 exited ${String(code)} without JSON: ${proc.stderr().trim().slice(-200)}` };
  }
}
