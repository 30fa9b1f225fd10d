/**
 * iperf3 for the throughput section: one server on 127.0.0.1 (restartable on the same port after a failed
 * run), and a client run that returns the receiver's Gbit/s from iperf3's JSON (`end.sum_received`).
 */
import { findFreePort } from '../devtools';
import { type Teardown, type TrackedChild, spawnTracked } from './teardown';

const START_TIMEOUT_MS = 5_000;
const MAX_START_ATTEMPTS = 5;
/** A client run may take this long beyond its -t before it is killed. */
const CLIENT_SLACK_MS = 20_000;

export interface IperfServer {
  readonly port: number;
  readonly pid: () => number | undefined;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startIperfServer(teardown: Teardown): Promise<IperfServer> {
  let port = 0;
  let proc: TrackedChild | undefined;
  const launch = async (fixedPort?: number): Promise<boolean> => {
    port = fixedPort ?? (await findFreePort());
    const p = spawnTracked(teardown, 'iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port), '--forceflush']);
    proc = p;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (p.stdout().includes('Server listening')) return true;
      if (p.child.exitCode !== null || p.child.signalCode !== null) break;
      await new Promise((r) => setTimeout(r, 20)); // poll interval of a bounded wait
    }
    await p.stop();
    return false;
  };
  let started = false;
  for (let attempt = 0; attempt < MAX_START_ATTEMPTS && !started; attempt++) started = await launch();
  if (!started) throw new Error(`iperf3 server did not start: ${proc?.stderr().slice(-500) ?? ''}`);
  return {
    get port() {
      return port;
    },
    pid: () => proc?.child.pid,
    restart: async () => {
      await proc?.stop();
      for (let attempt = 0; attempt < MAX_START_ATTEMPTS; attempt++) if (await launch(port)) return;
      throw new Error(`iperf3 server did not restart on port ${port}`);
    },
    stop: async () => proc?.stop(),
  };
}

export interface IperfResult {
  readonly gbps?: number;
  readonly error?: string;
  readonly retransmits?: number;
}

export interface IperfClient {
  readonly proc: TrackedChild;
  readonly result: Promise<IperfResult>;
}

export function runIperfClient(teardown: Teardown, port: number, options: { seconds: number; reverse: boolean; parallel: number }): IperfClient {
  const args = ['-c', '127.0.0.1', '-p', String(port), '-t', String(options.seconds), '-P', String(options.parallel), '-J', '--connect-timeout', '5000'];
  if (options.reverse) args.push('-R');
  const proc = spawnTracked(teardown, 'iperf3', args);
  const timer = setTimeout(() => void proc.stop(), options.seconds * 1000 + CLIENT_SLACK_MS);
  const result = proc.exited.then(({ code, signal }): IperfResult => {
    clearTimeout(timer);
    let json: { error?: string; end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } } };
    try {
      json = JSON.parse(proc.stdout()) as typeof json;
    } catch {
      return { error: `iperf3 exited ${code ?? signal ?? '?'} without JSON: ${proc.stderr().trim().slice(-200)}` };
    }
    const bps = json.end?.sum_received?.bits_per_second;
    if (json.error || code !== 0 || bps === undefined) return { error: json.error ?? `iperf3 exited ${code ?? signal ?? '?'}` };
    return { gbps: bps / 1e9, retransmits: json.end?.sum_sent?.retransmits };
  });
  return { proc, result };
}
