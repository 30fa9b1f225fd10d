/**
 * Section serial: throughput across a pty pair (socat, like a null-modem cable), 1 MiB each way, at 115200
 * baud and at the highest rate the pty accepts, direct (serialport on both ends) and through Portway (a TCP
 * client on `portway connect pi1 SERVICE`, the agent on one end, serialport on the other), same run. A pty
 * does not pace bytes by its baud rate (no UART), so both rates measure the path, not the line: a real
 * 115200-baud UART carries at most 11.5 KB/s, far below either figure. Each figure is the median of 3
 * interleaved runs.
 */
import net from 'node:net';
import path from 'node:path';
import { SerialPort } from 'serialport';
import { keepPollInterest } from '../agent/src/streams/serial-poll-interest';
import { PortwayCluster, pseudoRandomBytes } from '../devtools';
import type { BenchContext } from './context';
import { DEVICE_NAME } from './environment';
import { fmt, type ResultRow } from './report';
import { median } from './stats';
import { spawnTracked } from './teardown';

const BYTES = 1024 * 1024;
const TRANSFER_TIMEOUT_MS = 30_000;
const RUNS_PER_FIGURE = 3;
/** Tried from the top: the first one the pty accepts (open succeeds and the kernel reports it) wins. */
const HIGH_RATES = [4_000_000, 3_000_000, 2_000_000, 1_000_000, 921_600, 460_800, 230_400];

type Direction = 'to device' | 'from device';

export async function runSerial(ctx: BenchContext): Promise<ResultRow[]> {
  const dir = await ctx.env.dir();
  const slow = await ptyPair(ctx, path.join(dir, 'tty-slow'), path.join(dir, 'tty-slow-peer'));
  const fast = await ptyPair(ctx, path.join(dir, 'tty-fast'), path.join(dir, 'tty-fast-peer'));
  const highRate = await highestRate(fast.agentPath);
  const cluster = await PortwayCluster.start({
    dir: `${dir}/serial-cluster`,
    deviceName: DEVICE_NAME,
    services: [
      { name: 'tty-slow', type: 'serial', path: slow.agentPath, baudRate: 115_200 },
      { name: 'tty-fast', type: 'serial', path: fast.agentPath, baudRate: highRate },
    ],
  });
  ctx.teardown.add('serial cluster', () => cluster.stop());
  const rows: ResultRow[] = [];
  const raw: unknown[] = [];
  for (const [service, pair, rate] of [['tty-slow', slow, 115_200], ['tty-fast', fast, highRate]] as const) {
    const connect = await cluster.connect(service);
    ctx.teardown.add(`connect ${service}`, async () => void (await connect.proc.stop()));
    for (const direction of ['to device', 'from device'] as const) {
      ctx.signal.throwIfAborted();
      ctx.progress(`serial ${rate} baud ${direction}`);
      // Interleaved runs, median of each: a single 1 MiB transfer through a pty varies by 2-3x on a busy machine.
      const directRuns: number[] = [];
      const tunnelRuns: number[] = [];
      for (let run = 0; run < RUNS_PER_FIGURE; run++) {
        directRuns.push(await directRun(pair, rate, direction));
        tunnelRuns.push(await tunnelRun(pair, rate, connect.port, direction));
      }
      const [direct, tunnel] = [median(directRuns), median(tunnelRuns)];
      raw.push({ service, rate, direction, directMBps: directRuns, portwayMBps: tunnelRuns });
      rows.push({ section: 'serial', measurement: `pty pair at ${rate} baud, 1 MiB ${direction}`, path: 'direct (serialport both ends)', result: `${fmt(direct, 2)} MB/s`, values: { mbps: direct }, notes: `median of ${RUNS_PER_FIGURE}: ${directRuns.map((x) => fmt(x, 1)).join(', ')}` });
      rows.push({ section: 'serial', measurement: `pty pair at ${rate} baud, 1 MiB ${direction}`, path: 'Portway', result: `${fmt(tunnel, 2)} MB/s`, values: { mbps: tunnel }, comparison: `${fmt((tunnel / direct) * 100, 0)} % of direct`, notes: `median of ${RUNS_PER_FIGURE}: ${tunnelRuns.map((x) => fmt(x, 1)).join(', ')}${rate === 115_200 ? '; a real UART at 115200 baud: 0.0115 MB/s' : ''}` });
    }
    await connect.proc.stop();
  }
  ctx.record('serial', { highRate, runs: raw });
  return rows;
}

async function ptyPair(ctx: BenchContext, agentPath: string, peerPath: string): Promise<{ agentPath: string; peerPath: string }> {
  const proc = spawnTracked(ctx.teardown, 'socat', ['-d', '-d', `pty,raw,echo=0,link=${agentPath}`, `pty,raw,echo=0,link=${peerPath}`]);
  for (let i = 0; i < 500 && !proc.stderr().includes('starting data transfer loop'); i++) {
    if (proc.child.exitCode !== null) throw new Error(`socat exited: ${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 10)); // poll interval of a bounded wait (5 s)
  }
  if (!proc.stderr().includes('starting data transfer loop')) throw new Error('socat did not start');
  return { agentPath, peerPath };
}

async function open(pathName: string, baudRate: number): Promise<SerialPort> {
  const port = new SerialPort({ path: pathName, baudRate, autoOpen: false });
  port.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  keepPollInterest(port); // as the agent does, so "direct" is the same serialport
  return port;
}

function close(port: SerialPort): Promise<void> {
  return new Promise((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
}

async function highestRate(pathName: string): Promise<number> {
  for (const rate of HIGH_RATES) {
    try {
      const port = await open(pathName, rate);
      const actual = await new Promise<number | undefined>((resolve) => port.port?.getBaudRate().then((r) => resolve(r.baudRate), () => resolve(undefined)) ?? resolve(undefined));
      await close(port);
      if (actual === undefined || actual === rate) return rate;
    } catch {
      // not accepted: try the next one down
    }
  }
  return 115_200;
}

/** Bytes from `source` until `length` arrived; MB/s from the first write to the last byte. */
function receive(source: NodeJS.ReadableStream, length: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let have = 0;
    const timer = setTimeout(() => {
      source.off('data', onData);
      reject(new Error(`serial bench: ${have} of ${length} bytes within ${TRANSFER_TIMEOUT_MS} ms`));
    }, TRANSFER_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      have += chunk.length;
      if (have >= length) {
        clearTimeout(timer);
        source.off('data', onData);
        resolve();
      }
    };
    source.on('data', onData);
  });
}

/** Open the agent's end once the agent has let go of it (it closes the port just after a stream ends). */
async function openWhenFree(pathName: string, rate: number): Promise<SerialPort> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await open(pathName, rate);
    } catch (err) {
      if (attempt >= 100 || !/Cannot lock port/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 50)); // bounded: 100 attempts, 5 s
    }
  }
}

async function directRun(pair: { agentPath: string; peerPath: string }, rate: number, direction: Direction): Promise<number> {
  const [a, b] = [await openWhenFree(pair.agentPath, rate), await open(pair.peerPath, rate)];
  try {
    const [from, to] = direction === 'to device' ? [a, b] : [b, a];
    const data = pseudoRandomBytes(`serial bench ${direction}`, BYTES);
    const t0 = performance.now();
    const done = receive(to, BYTES);
    from.write(data);
    await done;
    return BYTES / 1e6 / ((performance.now() - t0) / 1000);
  } finally {
    await Promise.all([close(a), close(b)]);
  }
}

async function tunnelRun(pair: { agentPath: string; peerPath: string }, rate: number, port: number, direction: Direction): Promise<number> {
  const peer = await open(pair.peerPath, rate);
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  socket.on('error', () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    // One byte first, so the agent holds the port open before the clock starts.
    const ready = receive(peer, 1);
    socket.write('x');
    await ready;
    const data = pseudoRandomBytes(`serial bench ${direction}`, BYTES);
    const [to, write] = direction === 'to device' ? [peer, (d: Buffer) => socket.write(d)] : [socket, (d: Buffer) => peer.write(d)];
    const t0 = performance.now();
    const done = receive(to, BYTES);
    write(data);
    await done;
    return BYTES / 1e6 / ((performance.now() - t0) / 1000);
  } finally {
    socket.destroy();
    await close(peer);
  }
}
