/**
 * `portway connect DEVICE SERVICE --udp`: a local UDP socket whose every client source address is one
 * session, carried by its own end-to-end stream (opened on the address's first datagram; the datagrams that
 * arrive meanwhile wait in the session's bounded backlog). Replies from the device go back to that address.
 *
 * Sessions end after `idleTimeoutMs` without a datagram either way, when the agent ends them (its own idle
 * timeout, or it stops), or when the proxy stops. At most `maxSessions` are open: a new address beyond that
 * evicts the session idle the longest. Evicted sessions still finish their close, so sessions closing are
 * bounded too (another `maxSessions`); a datagram from a new address while both are full is dropped.
 */
import dgram from 'node:dgram';
import { PortwayError } from '../../protocol';
import { DatagramSession, type DatagramDropReason } from '../../shared/datagram-session';
import { pumpE2E } from '../../shared/e2e-pump';
import { listDevices } from './commands';
import { configDir, KnownDevices, loadSettings } from './settings';
import { StreamOpener, type OpenedStream } from './stream-opener';

/** Framed datagrams waiting for a slow (or still opening) stream before newer ones are dropped. */
export const UDP_SESSION_BACKLOG_BYTES = 256 * 1024;
/** Socket receive buffer asked of the kernel (it may grant less), to ride out bursts. */
const RECV_BUFFER_BYTES = 1024 * 1024;
const STREAM_TIMEOUT_MS = 15_000;

export interface UdpForwardOptions {
  readonly listen: { host: string; port: number };
  readonly idleTimeoutMs: number;
  readonly maxSessions: number;
  readonly closeGraceMs: number;
}

export interface UdpForwardStats {
  /** Sessions open now (evicted and closing ones not included). */
  readonly sessions: number;
  readonly opened: number;
  readonly closed: number;
  readonly evicted: number;
  /** Sessions whose stream could not be opened or was refused by the device. */
  readonly failed: number;
  /** Datagrams from a new address dropped because live and closing sessions were both at their cap. */
  readonly rejected: number;
  readonly datagramsIn: number;
  readonly datagramsOut: number;
  readonly dropped: Readonly<Record<DatagramDropReason, number>>;
}

export interface UdpForwardDeps {
  readonly streams: { open(options: { awaitStatus: boolean }): Promise<OpenedStream> };
  readonly report: { error(err: PortwayError, remote: string): void };
}

interface Entry {
  readonly key: string;
  readonly session: DatagramSession;
  readonly done: Promise<void>;
}

export class UdpForward {
  private state: 'idle' | 'open' | 'closing' | 'closed' = 'idle';
  private socket: dgram.Socket | undefined;
  /** Live sessions by source address. */
  private readonly live = new Map<string, Entry>();
  /** Every session not finished yet (live, evicted, closing). */
  private readonly all = new Set<Entry>();
  private readonly totals = { opened: 0, closed: 0, evicted: 0, failed: 0, rejected: 0, datagramsIn: 0, datagramsOut: 0 };
  private readonly dropped: Record<DatagramDropReason, number> = { oversized: 0, truncated: 0, backlog: 0, 'send-failed': 0, refused: 0 };

  constructor(
    private readonly deps: UdpForwardDeps,
    private readonly options: UdpForwardOptions,
  ) {}

  /** Bind the local socket; resolves with the address it got. */
  async start(): Promise<{ host: string; port: number }> {
    if (this.state !== 'idle') throw new Error(`UdpForward cannot start in state ${this.state}`);
    const { host, port } = this.options.listen;
    const socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
    this.socket = socket;
    let onBindError: (err: NodeJS.ErrnoException) => void = () => undefined;
    await new Promise<void>((resolve, reject) => {
      onBindError = (err) => reject(new PortwayError('PW_BAD_REQUEST', `cannot listen on udp ${host}:${port}: ${err.code ?? err.message}`));
      socket.on('error', onBindError);
      socket.bind(port, host, () => resolve());
    });
    socket.off('error', onBindError);
    socket.on('error', () => {
      // A bound UDP socket reports ICMP errors for earlier sends here (ECONNREFUSED: the client went away);
      // the session's idle timeout ends it.
    });
    try {
      socket.setRecvBufferSize(RECV_BUFFER_BYTES);
    } catch {
      // ERR_SOCKET_BUFFER_SIZE: the kernel's own size stays; only bursts are more likely to be dropped.
    }
    socket.on('message', (datagram, rinfo) => this.onMessage(datagram, rinfo));
    this.state = 'open';
    const address = socket.address();
    return { host: address.address, port: address.port };
  }

  stats(): UdpForwardStats {
    const dropped = { ...this.dropped };
    let { datagramsIn, datagramsOut } = this.totals;
    for (const entry of this.all) {
      const c = entry.session.counters;
      datagramsIn += c.datagramsIn;
      datagramsOut += c.datagramsOut;
      for (const reason of Object.keys(dropped) as DatagramDropReason[]) dropped[reason] += c.dropped[reason];
    }
    return { ...this.totals, sessions: this.live.size, datagramsIn, datagramsOut, dropped };
  }

  /** End every session gracefully (bounded by closeGraceMs), then close the socket. Idempotent. */
  async stop(): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    for (const entry of this.all) entry.session.close('stopping');
    this.live.clear();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.closeGraceMs);
    });
    await Promise.race([Promise.all([...this.all].map((e) => e.done)), deadline]);
    clearTimeout(timer);
    for (const entry of this.all) entry.session.destroy();
    this.socket?.close();
    this.state = 'closed';
  }

  private onMessage(datagram: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.state !== 'open') return;
    const key = `${rinfo.address}|${rinfo.port}`;
    let entry = this.live.get(key);
    if (!entry) {
      if (this.live.size >= this.options.maxSessions) this.evictOldest();
      if (this.all.size >= 2 * this.options.maxSessions) {
        this.totals.rejected++;
        return;
      }
      entry = this.openSession(key, rinfo);
    }
    entry.session.deliver(datagram);
  }

  private evictOldest(): void {
    let oldest: Entry | undefined;
    for (const entry of this.live.values()) {
      if (!oldest || entry.session.lastActivityAt < oldest.session.lastActivityAt) oldest = entry;
    }
    if (!oldest) return;
    this.live.delete(oldest.key);
    this.totals.evicted++;
    oldest.session.close('evicted');
  }

  private openSession(key: string, rinfo: dgram.RemoteInfo): Entry {
    const remote = `${rinfo.family === 'IPv6' ? `[${rinfo.address}]` : rinfo.address}:${rinfo.port}`;
    const session = new DatagramSession(
      {
        send: (datagram, done) => {
          if (this.state === 'closed' || !this.socket) done(new Error('socket closed'));
          else this.socket.send(datagram, rinfo.port, rinfo.address, done);
        },
      },
      { idleTimeoutMs: this.options.idleTimeoutMs, maxBacklogBytes: UDP_SESSION_BACKLOG_BYTES, closeGraceMs: this.options.closeGraceMs },
    );
    session.on('error', () => {
      // The pump reports how the session ended.
    });
    const done = this.deps.streams
      .open({ awaitStatus: false })
      .then(
        (stream) => {
          session.start();
          return pumpE2E(stream.inner, session, { closeGraceMs: this.options.closeGraceMs, expectStatus: true, transport: stream.raw });
        },
        (err: unknown) => {
          session.destroy();
          return { error: err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', String(err)) };
        },
      )
      .then((result) => {
        if (result.error) {
          this.totals.failed++;
          this.deps.report.error(result.error, remote);
        }
        this.finish(entry);
      });
    const entry: Entry = { key, session, done };
    this.live.set(key, entry);
    this.all.add(entry);
    this.totals.opened++;
    return entry;
  }

  private finish(entry: Entry): void {
    if (this.live.get(entry.key) === entry) this.live.delete(entry.key);
    if (!this.all.delete(entry)) return;
    const c = entry.session.counters;
    this.totals.closed++;
    this.totals.datagramsIn += c.datagramsIn;
    this.totals.datagramsOut += c.datagramsOut;
    for (const reason of Object.keys(this.dropped) as DatagramDropReason[]) this.dropped[reason] += c.dropped[reason];
  }
}

export interface UdpForwardProxy {
  readonly address: { host: string; port: number };
  stats(): UdpForwardStats;
  close(): Promise<void>;
}

/**
 * Start `portway connect --udp`. Before listening it checks, as the relay lists them, that the service is
 * a UDP one (the agent checks again end to end), and primes a relay socket so a wrong device, a wrong
 * service or an offline device fails at once with its reason.
 */
export async function connectUdp(
  options: { device: string; service: string; listen: { host: string; port: number }; idleTimeoutMs: number; maxSessions: number; closeGraceMs: number; primed?: number },
  report: UdpForwardDeps['report'],
): Promise<UdpForwardProxy> {
  const settings = await loadSettings(configDir());
  const known = await KnownDevices.load(settings.dir);
  const device = (await listDevices()).find((d) => d.name === options.device || d.id === options.device);
  const listed = device?.services.find((s) => s.name === options.service);
  if (listed && listed.type !== 'udp') {
    throw new PortwayError('PW_SERVICE_TYPE_MISMATCH', `service ${options.service} on ${options.device} is ${listed.type}, not udp; connect without --udp`);
  }
  const streams = new StreamOpener({ settings, known }, { device: options.device, service: options.service }, { timeoutMs: STREAM_TIMEOUT_MS, primed: options.primed ?? 2, transport: 'udp' });
  await streams.primeNow();
  const forward = new UdpForward({ streams, report }, options);
  let address;
  try {
    address = await forward.start();
  } catch (err) {
    streams.close();
    throw err;
  }
  streams.refill();
  return {
    address,
    stats: () => forward.stats(),
    close: async () => {
      await forward.stop();
      streams.close();
    },
  };
}
