/**
 * In-process TCP fault proxy in the style of Toxiproxy, for tests and the benchmark's delay links.
 *
 *   client ──TCP──▶ FaultProxy (listen) ──TCP──▶ upstream
 *           `upstream` direction: client → upstream;  `downstream` direction: upstream → client
 *
 * Toxics are set per direction at runtime and apply at once to existing and new connections:
 * latency ± jitter, bandwidth, slicer, blackhole, pause, half-close, bitflip, limit_data (see
 * fault-toxics.ts), plus resetConnections() / setResetPeer() for RSTs. Every socket has TCP_NODELAY.
 *
 * What latency models. Each chunk read is due at arrival + one latency draw, never before the previous
 * chunk's due time: a fixed one-way delay with byte order kept, not a pause between writes. Data in flight
 * is held by the proxy (rate × delay, capped by maxBufferedBytes per direction and connection); beyond
 * that, and whenever a sink's write() returns false, the sender is paused, so the proxy never buffers
 * without bound. Bandwidth paces writes after the delay (serialisation is modelled after propagation).
 *
 * What delayConnect adds. The proxy accepts the client's TCP connection locally, at once: the client's
 * connect() completes without any delay, and that cannot be changed from user space. With delayConnect the
 * rest of a real handshake is modelled from the latencies Lu (upstream) and Ld (downstream):
 *   - the proxy dials upstream only after Lu (the SYN's trip); say it is connected at time C;
 *   - the client "could have sent" from C + Ld on (its SYN-ACK's trip): client data is held until then
 *     and is then delayed by Lu as usual, so its first byte reaches upstream at C + Ld + Lu at the earliest;
 *   - the server's side "is accepted" at C + Ld + Lu (the ACK's trip): upstream data is held until then and
 *     delayed by Ld, so the first server byte reaches the client at C + 2·Ld + Lu at the earliest;
 *   - a refused or timed-out upstream resets the client Ld after the proxy learns of it.
 * So a client that connects and writes at once sees its first echo after ≈ 2 RTT (handshake + data), as
 * on a real link; a client that waits for connect before timing sees the handshake RTT counted in the
 * first exchange instead. Without delayConnect the upstream is dialled at accept and data flows as soon as
 * it is connected (plus latency).
 *
 * Not modelled: loss, reordering, MTU, TCP windows and slow start; an RST or FIN is forwarded without
 * delay behind the data in flight (FIN) or at once (RST).
 */
import { EventEmitter } from 'node:events';
import { type Server, type Socket, createServer } from 'node:net';
import { FaultConnection, type HostPort } from './fault-connection';
import type { DirectionCounters } from './fault-link';
import {
  type BandwidthToxic,
  type BitflipToxic,
  type Direction,
  type DirectionSelector,
  type DirectionToxics,
  type LatencyToxic,
  type LimitDataToxic,
  type RandomSource,
  type SlicerToxic,
  DIRECTIONS,
  checkBandwidth,
  checkBitflip,
  checkLatency,
  checkLimitData,
  checkSlicer,
  emptyToxics,
} from './fault-toxics';

export interface FaultProxyOptions {
  readonly listen: HostPort;
  readonly upstream: HostPort;
  /** Model the TCP handshake on the delayed link (see the header). Default false. */
  readonly delayConnect?: boolean;
  /** Bytes held per direction and connection before the sender is paused. Default 4 MiB. */
  readonly maxBufferedBytes?: number;
  /** Bound on the upstream connect; the client is reset when it passes. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** After limit_data closes a connection, sockets still open after this are destroyed. Default 2 s. */
  readonly closeTimeoutMs?: number;
  /** Random source for jitter, slicer and bitflip; default Math.random. */
  readonly random?: RandomSource;
}

export interface FaultProxyStats {
  readonly connectionsAccepted: number;
  readonly connectionsOpen: number;
  readonly upstreamConnectFailures: number;
  readonly resets: number;
  readonly upstream: Readonly<DirectionCounters>;
  readonly downstream: Readonly<DirectionCounters>;
}

const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;

/** Emits 'connection' (id: number) when a client is accepted and 'connection-closed' (id) when it is gone. */
export class FaultProxy extends EventEmitter {
  private state: 'idle' | 'starting' | 'listening' | 'stopping' | 'stopped' = 'idle';
  private readonly server: Server;
  private readonly connections = new Set<FaultConnection>();
  private readonly toxics: Record<Direction, DirectionToxics> = {
    upstream: emptyToxics(),
    downstream: emptyToxics(),
  };
  private readonly counters: Record<Direction, DirectionCounters> = {
    upstream: { bytesIn: 0, bytesOut: 0, bytesDropped: 0 },
    downstream: { bytesIn: 0, bytesOut: 0, bytesDropped: 0 },
  };
  private resetPeerTimeoutMs: number | null = null;
  /** Per-connection toxics (setConnectionBlackhole), by connection id. */
  private readonly overrides = new Map<number, Record<Direction, DirectionToxics>>();
  private nextId = 1;
  private connectionsAccepted = 0;
  private upstreamConnectFailures = 0;
  private resets = 0;
  private boundAddress: HostPort | null = null;

  constructor(private readonly options: FaultProxyOptions) {
    super();
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', () => undefined); // listen errors reject start()
  }

  /** Listens; resolves with the bound address (read the port back when listening on port 0). */
  async start(): Promise<HostPort> {
    if (this.state !== 'idle') throw new Error(`FaultProxy.start() called in state ${this.state}`);
    this.state = 'starting';
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.options.listen.port, this.options.listen.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('FaultProxy: no TCP address');
    this.boundAddress = { host: address.address, port: address.port };
    this.state = 'listening';
    return this.boundAddress;
  }

  /** Closes the listener, destroys every connection and clears every timer. Idempotent. */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    const wasListening = this.state === 'listening' || this.state === 'starting';
    this.state = 'stopping';
    const closed = wasListening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    const connections = [...this.connections];
    for (const connection of connections) connection.destroy();
    await Promise.all([closed, ...connections.map((connection) => connection.closed)]);
    this.state = 'stopped';
  }

  address(): HostPort {
    if (this.boundAddress === null) throw new Error('FaultProxy is not listening');
    return this.boundAddress;
  }

  setLatency(direction: DirectionSelector, latency: LatencyToxic | null): void {
    if (latency !== null) checkLatency(latency);
    this.update(direction, (toxics) => (toxics.latency = latency));
  }

  setBandwidth(direction: DirectionSelector, bandwidth: BandwidthToxic | null): void {
    if (bandwidth !== null) checkBandwidth(bandwidth);
    this.update(direction, (toxics) => (toxics.bandwidth = bandwidth));
  }

  setSlicer(direction: DirectionSelector, slicer: SlicerToxic | null): void {
    if (slicer !== null) checkSlicer(slicer);
    this.update(direction, (toxics) => (toxics.slicer = slicer));
  }

  setBitflip(direction: DirectionSelector, bitflip: BitflipToxic | null): void {
    if (bitflip !== null) checkBitflip(bitflip);
    this.update(direction, (toxics) => (toxics.bitflip = bitflip));
  }

  setLimitData(direction: DirectionSelector, limit: LimitDataToxic | null): void {
    if (limit !== null) checkLimitData(limit);
    this.update(direction, (toxics) => (toxics.limitData = limit));
  }

  setBlackhole(direction: DirectionSelector, isBlackholed: boolean): void {
    this.update(direction, (toxics) => (toxics.isBlackholed = isBlackholed));
  }

  /**
   * Blackhole one connection only (by the id of its 'connection' event), in one or both directions; the
   * proxy-wide toxics stay as they are for the others. `false` gives it the proxy-wide toxics back.
   */
  setConnectionBlackhole(id: number, direction: DirectionSelector, isBlackholed: boolean): void {
    const connection = [...this.connections].find((c) => c.id === id);
    if (!connection) throw new Error(`no open connection ${id}`);
    if (!isBlackholed) {
      this.overrides.delete(id);
    } else {
      const own = this.overrides.get(id) ?? { upstream: { ...this.toxics.upstream }, downstream: { ...this.toxics.downstream } };
      for (const d of DIRECTIONS) if (direction === 'both' || direction === d) own[d].isBlackholed = true;
      this.overrides.set(id, own);
    }
    connection.refresh();
  }

  /** Each open connection's id and the bytes it forwarded each way, for picking one out by its traffic. */
  connectionStats(): Array<{ readonly id: number; readonly upstreamBytes: number; readonly downstreamBytes: number }> {
    return [...this.connections].map((c) => ({ id: c.id, upstreamBytes: c.forwardedBytes('upstream'), downstreamBytes: c.forwardedBytes('downstream') }));
  }

  setPaused(direction: DirectionSelector, isPaused: boolean): void {
    this.update(direction, (toxics) => (toxics.isPaused = isPaused));
  }

  /** FIN toward the direction's sink once what is in flight is written; a FIN cannot be taken back. */
  setHalfClosed(direction: DirectionSelector, isHalfClosed: boolean): void {
    this.update(direction, (toxics) => (toxics.isHalfClosed = isHalfClosed));
  }

  /** Resets each connection (existing and new) `timeoutMs` after it was accepted or this call; null disarms. */
  setResetPeer(reset: { readonly timeoutMs: number } | null): void {
    if (reset !== null && !(reset.timeoutMs >= 0)) throw new RangeError('timeoutMs must be >= 0');
    this.resetPeerTimeoutMs = reset?.timeoutMs ?? null;
    for (const connection of this.connections) connection.armResetPeer(this.resetPeerTimeoutMs);
  }

  /** Destroys every current connection with an RST on both sides; returns how many. */
  resetConnections(): number {
    const connections = [...this.connections].filter((c) => c.state !== 'closing' && c.state !== 'closed');
    for (const connection of connections) connection.reset();
    return connections.length;
  }

  /** Removes every toxic in both directions (connections already half-closed stay so). */
  clearToxics(): void {
    this.resetPeerTimeoutMs = null;
    for (const connection of this.connections) connection.armResetPeer(null);
    this.update('both', (toxics) => Object.assign(toxics, emptyToxics()));
  }

  getToxics(direction: Direction): Readonly<DirectionToxics> {
    return { ...this.toxics[direction] };
  }

  stats(): FaultProxyStats {
    return {
      connectionsAccepted: this.connectionsAccepted,
      connectionsOpen: this.connections.size,
      upstreamConnectFailures: this.upstreamConnectFailures,
      resets: this.resets,
      upstream: { ...this.counters.upstream },
      downstream: { ...this.counters.downstream },
    };
  }

  private update(selector: DirectionSelector, change: (toxics: DirectionToxics) => void): void {
    for (const direction of DIRECTIONS) {
      if (selector === 'both' || selector === direction) change(this.toxics[direction]);
    }
    for (const connection of this.connections) connection.refresh();
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined); // the connection takes over at once; see FaultConnection
    if (this.state !== 'listening') {
      client.destroy();
      return;
    }
    this.connectionsAccepted += 1;
    const id = this.nextId++;
    const connection = new FaultConnection(
      id,
      {
        client,
        upstreamAddress: this.options.upstream,
        toxics: (direction) => this.overrides.get(id)?.[direction] ?? this.toxics[direction],
        counters: this.counters,
        random: this.options.random ?? Math.random,
        onUpstreamFailed: () => (this.upstreamConnectFailures += 1),
        onReset: () => (this.resets += 1),
        onClosed: (closed) => {
          this.connections.delete(closed);
          this.overrides.delete(closed.id);
          this.emit('connection-closed', closed.id);
        },
      },
      {
        delayConnect: this.options.delayConnect ?? false,
        maxBufferedBytes: this.options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
        connectTimeoutMs: this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        closeTimeoutMs: this.options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
      },
    );
    this.connections.add(connection);
    connection.armResetPeer(this.resetPeerTimeoutMs);
    this.emit('connection', connection.id);
    connection.start();
  }
}
