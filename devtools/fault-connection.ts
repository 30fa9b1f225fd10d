/**
 * One accepted client connection of the fault proxy and its upstream connection, joined by two FaultLinks.
 *
 * Teardown: a FIN is forwarded as a FIN (after the data in flight), so half-close propagates. A socket that
 * dies with an error (ECONNRESET, EPIPE) makes the proxy reset the other side with an RST right away, and
 * what was in flight is dropped. An upstream that refuses or does not answer within connectTimeoutMs gets
 * the client reset. The connection is done when both sockets have closed.
 */
import { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { type DirectionCounters, FaultLink } from './fault-link';
import { type Direction, type DirectionToxics, type RandomSource, sampleDelayMs } from './fault-toxics';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface FaultConnectionDeps {
  readonly client: Socket;
  readonly upstreamAddress: HostPort;
  readonly toxics: (direction: Direction) => DirectionToxics;
  readonly counters: Readonly<Record<Direction, DirectionCounters>>;
  readonly random: RandomSource;
  readonly onUpstreamFailed: () => void;
  readonly onReset: () => void;
  readonly onClosed: (connection: FaultConnection) => void;
}

export interface FaultConnectionOptions {
  readonly delayConnect: boolean;
  readonly maxBufferedBytes: number;
  readonly connectTimeoutMs: number;
  readonly closeTimeoutMs: number;
}

type Side = 'client' | 'upstream';

export class FaultConnection {
  state: 'connecting' | 'open' | 'closing' | 'closed' = 'connecting';
  private readonly upstream = new Socket({ allowHalfOpen: true });
  private readonly links: Record<Direction, FaultLink>;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly openSides = new Set<Side>(['client', 'upstream']);
  private upstreamState: 'waiting' | 'connecting' | 'connected' | 'failed' = 'waiting';
  private resetPeerTimer: Delay | null = null;
  private resolveClosed: () => void = () => undefined;
  /** Settles when both sockets have closed and every timer is cleared. */
  readonly closed = new Promise<void>((resolve) => (this.resolveClosed = resolve));

  constructor(
    readonly id: number,
    private readonly deps: FaultConnectionDeps,
    private readonly options: FaultConnectionOptions,
  ) {
    const { client } = deps;
    client.setNoDelay(true);
    client.on('error', () => undefined); // handled on 'close' (hadError), see onSocketClose
    this.upstream.on('error', () => {
      if (this.upstreamState === 'connecting') this.failUpstream();
    });
    client.on('close', (hadError: boolean) => this.onSocketClose('client', hadError));
    this.upstream.on('close', (hadError: boolean) => this.onSocketClose('upstream', hadError === true));
    const linkOptions = { maxBufferedBytes: options.maxBufferedBytes };
    this.links = {
      upstream: this.makeLink('upstream', client, this.upstream, linkOptions),
      downstream: this.makeLink('downstream', this.upstream, client, linkOptions),
    };
  }

  /** Dials upstream now, or after one upstream latency draw with delayConnect (the SYN's trip). */
  start(): void {
    const synDelayMs = this.options.delayConnect ? this.sampleDelay('upstream') : 0;
    if (synDelayMs > 0) this.later(synDelayMs, () => this.connectUpstream());
    else this.connectUpstream();
  }

  /** Bytes forwarded so far in each direction (upstream: client to upstream). */
  forwardedBytes(direction: Direction): number {
    return this.links[direction].forwardedBytes;
  }

  /** Re-reads the toxics in both directions. */
  refresh(): void {
    this.links.upstream.refresh();
    this.links.downstream.refresh();
  }

  /** Arms (or with null, disarms) a reset of this connection `timeoutMs` from now. */
  armResetPeer(timeoutMs: number | null): void {
    if (this.resetPeerTimer !== null) this.clearTimer(this.resetPeerTimer);
    this.resetPeerTimer = timeoutMs === null ? null : this.later(timeoutMs, () => this.reset());
  }

  /** Destroys both sockets with an RST (upstream: a plain destroy while it is still connecting). */
  reset(): void {
    if (this.state === 'closed' || this.state === 'closing') return;
    this.state = 'closing';
    this.deps.onReset();
    this.disposeLinks();
    resetSocket(this.deps.client);
    this.destroyUpstream('reset');
  }

  /** Destroys both sockets without ceremony (proxy stop). */
  destroy(): void {
    if (this.state === 'closed') return;
    this.state = 'closing';
    this.disposeLinks();
    this.deps.client.destroy();
    this.upstream.destroy();
  }

  private makeLink(direction: Direction, source: Socket, sink: Socket, options: { maxBufferedBytes: number }) {
    const deps = {
      source,
      sink,
      toxics: () => this.deps.toxics(direction),
      counters: this.deps.counters[direction],
      random: this.deps.random,
      onLimitReached: () => this.closeGracefully(),
    };
    return new FaultLink(deps, options);
  }

  private connectUpstream(): void {
    if (this.state !== 'connecting') return;
    this.upstreamState = 'connecting';
    const connectTimer = this.later(this.options.connectTimeoutMs, () => this.failUpstream());
    this.upstream.once('connect', () => {
      this.clearTimer(connectTimer);
      this.upstreamState = 'connected';
      this.upstream.setNoDelay(true);
      if (this.state !== 'connecting') return;
      this.state = 'open';
      const now = performance.now();
      // On a real link the client's connect completes one downstream trip after the SYN reached the
      // server (SYN-ACK), and the server's accept one upstream trip later (ACK).
      const synAckDelayMs = this.options.delayConnect ? this.sampleDelay('downstream') : 0;
      const ackDelayMs = this.options.delayConnect ? this.sampleDelay('upstream') : 0;
      this.links.upstream.establish(now + synAckDelayMs);
      this.links.downstream.establish(now + synAckDelayMs + ackDelayMs);
    });
    this.upstream.connect({ host: this.deps.upstreamAddress.host, port: this.deps.upstreamAddress.port });
  }

  private failUpstream(): void {
    if (this.upstreamState === 'failed' || this.upstreamState === 'connected') return;
    this.upstreamState = 'failed';
    this.deps.onUpstreamFailed();
    this.upstream.destroy();
    if (this.state === 'closed') return;
    this.state = 'closing';
    const rstDelayMs = this.options.delayConnect ? this.sampleDelay('downstream') : 0;
    if (rstDelayMs > 0) this.later(rstDelayMs, () => resetSocket(this.deps.client));
    else resetSocket(this.deps.client);
  }

  /** limit_data reached: FIN both ways, then destroy whatever has not closed within closeTimeoutMs. */
  private closeGracefully(): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    this.disposeLinks();
    for (const socket of [this.deps.client, this.upstream]) {
      if (!socket.destroyed && !socket.writableEnded) socket.end();
    }
    this.later(this.options.closeTimeoutMs, () => this.destroy());
  }

  private onSocketClose(side: Side, hadError: boolean): void {
    this.openSides.delete(side);
    if (this.state === 'connecting' || this.state === 'open') this.state = 'closing';
    if (side === 'client') {
      this.links.downstream.dispose();
      if (hadError) this.destroyUpstream('reset');
      else if (this.upstreamState !== 'connected') this.destroyUpstream('plain');
    } else {
      this.links.upstream.dispose();
      const isConnectFailure = this.upstreamState !== 'connected';
      if (hadError && !isConnectFailure) resetSocket(this.deps.client);
    }
    if (this.openSides.size === 0) this.finish();
  }

  private destroyUpstream(how: 'reset' | 'plain'): void {
    if (this.upstream.destroyed) return;
    if (how === 'reset' && this.upstreamState === 'connected') resetSocket(this.upstream);
    else this.upstream.destroy();
  }

  private finish(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.disposeLinks();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.resetPeerTimer = null;
    this.deps.onClosed(this);
    this.resolveClosed();
  }

  private disposeLinks(): void {
    this.links.upstream.dispose();
    this.links.downstream.dispose();
  }

  private sampleDelay(direction: Direction): number {
    return sampleDelayMs(this.deps.toxics(direction).latency, this.deps.random);
  }

  /**
   * Run `action` once `delayMs` have passed by performance.now(). A Node timer can fire up to ~1 ms early
   * against it (libuv measures from the loop's cached time), so an early one re-arms for the rest.
   */
  private later(delayMs: number, action: () => void): Delay {
    const due = performance.now() + delayMs;
    const arm = (ms: number): NodeJS.Timeout => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        const left = due - performance.now();
        if (left > 0) delay.timer = arm(left);
        else action();
      }, Math.max(1, Math.ceil(ms)));
      this.timers.add(timer);
      return timer;
    };
    const delay: Delay = { timer: arm(delayMs) };
    return delay;
  }

  private clearTimer(delay: Delay): void {
    clearTimeout(delay.timer);
    this.timers.delete(delay.timer);
  }
}

/** A pending `later` action; `timer` is the one armed now (an early firing re-arms). */
interface Delay {
  timer: NodeJS.Timeout;
}

/** RST for a connected socket; nothing for one already gone. */
function resetSocket(socket: Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}
