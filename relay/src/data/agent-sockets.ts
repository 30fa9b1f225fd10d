/**
 * Data sockets from agents, per device: idle pooled sockets ready to take a stream, and dial waiters —
 * streams waiting for the socket a device was asked (over MQTT) to open with a one-time token.
 * Tokens are looked up by their SHA-256 and compared in constant time; each is single-use and expires.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { PortwayError, STREAM_TOKEN_BYTES } from '../../../protocol';
import { dropConnection, type Connection } from '../tls-front';

interface DialWaiter {
  readonly deviceId: string;
  readonly digest: Buffer;
  readonly resolve: (conn: Connection) => void;
  readonly reject: (err: PortwayError) => void;
  timer: NodeJS.Timeout;
  /** However much progress the device makes, the wait ends here. */
  readonly hardDeadline: number;
}

/** A burst of dials may take a while if the device keeps delivering; never longer than this many timeouts. */
const DIAL_PROGRESS_EXTENSIONS = 4;

export interface AgentSocketsOptions {
  readonly maxPooledPerDevice: number;
  readonly maxPendingDialsPerDevice: number;
  readonly dialTimeoutMs: number;
}

export class AgentSockets {
  private readonly pools = new Map<string, Set<Connection>>();
  private readonly waiters = new Map<string, DialWaiter>();
  private readonly pendingPerDevice = new Map<string, number>();
  private readonly idleWatchers = new Map<Connection, () => void>();

  constructor(private readonly options: AgentSocketsOptions) {}

  /** Keep an idle socket of `deviceId`; false when the pool is full (the caller closes it). */
  addPooled(deviceId: string, conn: Connection): boolean {
    let pool = this.pools.get(deviceId);
    if (!pool) {
      pool = new Set();
      this.pools.set(deviceId, pool);
    }
    if (pool.size >= this.options.maxPooledPerDevice) return false;
    pool.add(conn);
    const remove = (): void => {
      pool.delete(conn);
      if (pool.size === 0 && this.pools.get(deviceId) === pool) this.pools.delete(deviceId);
    };
    // An idle pooled socket must not send anything; if it does, ends or fails, drop it.
    const watcher = (): void => {
      if (pool.has(conn)) dropConnection(conn);
    };
    this.idleWatchers.set(conn, watcher);
    conn.tls.on('readable', watcher);
    conn.tls.once('close', () => {
      // The TLS layer closes with its TCP connection, or alone when the carrier met garbage: drop both.
      const wasPooled = pool.has(conn);
      remove();
      this.unwatch(conn);
      if (wasPooled) dropConnection(conn);
    });
    return true;
  }

  /** Take an idle pooled socket, or undefined. */
  takePooled(deviceId: string): Connection | undefined {
    const pool = this.pools.get(deviceId);
    if (!pool) return undefined;
    for (const conn of pool) {
      pool.delete(conn);
      if (pool.size === 0) this.pools.delete(deviceId);
      this.unwatch(conn);
      if (!conn.tls.destroyed && conn.tls.readyState === 'open') return conn;
    }
    return undefined;
  }

  pooledCount(deviceId?: string): number {
    if (deviceId !== undefined) return this.pools.get(deviceId)?.size ?? 0;
    let n = 0;
    for (const pool of this.pools.values()) n += pool.size;
    return n;
  }

  /** Register a waiter for a dialed socket; returns the token to send to the device and the promise. */
  expectDial(deviceId: string): { token: string; socket: Promise<Connection> } {
    const pending = this.pendingPerDevice.get(deviceId) ?? 0;
    if (pending >= this.options.maxPendingDialsPerDevice) throw new PortwayError('PW_LIMIT_REACHED', 'too many streams waiting for this device');
    const token = randomBytes(STREAM_TOKEN_BYTES).toString('base64url');
    const digest = createHash('sha256').update(token).digest();
    const key = digest.toString('hex');
    this.pendingPerDevice.set(deviceId, pending + 1);
    const socket = new Promise<Connection>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(key, undefined, new PortwayError('PW_DIAL_TIMEOUT')), this.options.dialTimeoutMs);
      this.waiters.set(key, { deviceId, digest, resolve, reject, timer, hardDeadline: Date.now() + DIAL_PROGRESS_EXTENSIONS * this.options.dialTimeoutMs });
    });
    return { token, socket };
  }

  /** A device presented `token` on a new socket. False when the token is unknown, used, expired or not its own. */
  fulfilDial(deviceId: string, token: string, conn: Connection): boolean {
    const digest = createHash('sha256').update(token).digest();
    const waiter = this.waiters.get(digest.toString('hex'));
    if (!waiter || !timingSafeEqual(waiter.digest, digest) || waiter.deviceId !== deviceId) return false;
    this.settle(digest.toString('hex'), conn);
    this.progress(deviceId);
    return true;
  }

  /**
   * The device delivered a socket: it is alive and working through a burst. Its other waiters get a fresh
   * timeout ("no progress for dialTimeoutMs" fails a stream, not "slower than dialTimeoutMs in a burst"),
   * up to their hard deadline.
   */
  private progress(deviceId: string): void {
    const now = Date.now();
    for (const [key, waiter] of this.waiters) {
      if (waiter.deviceId !== deviceId) continue;
      clearTimeout(waiter.timer);
      const wait = Math.max(0, Math.min(this.options.dialTimeoutMs, waiter.hardDeadline - now));
      waiter.timer = setTimeout(() => this.settle(key, undefined, new PortwayError('PW_DIAL_TIMEOUT')), wait);
    }
  }

  /** Fail every waiter of a device (it went offline) and close its pool. */
  dropDevice(deviceId: string, error: PortwayError): void {
    for (const [key, waiter] of this.waiters) if (waiter.deviceId === deviceId) this.settle(key, undefined, error);
    const pool = this.pools.get(deviceId);
    if (pool) for (const conn of pool) dropConnection(conn);
  }

  cancelDial(token: string): void {
    const key = createHash('sha256').update(token).digest('hex');
    this.settle(key, undefined, new PortwayError('PW_SHUTTING_DOWN', 'stream cancelled'));
  }

  get pendingDials(): number {
    return this.waiters.size;
  }

  closeAll(): void {
    for (const key of [...this.waiters.keys()]) this.settle(key, undefined, new PortwayError('PW_SHUTTING_DOWN'));
    for (const pool of this.pools.values()) for (const conn of pool) dropConnection(conn);
    this.pools.clear();
  }

  private unwatch(conn: Connection): void {
    const watcher = this.idleWatchers.get(conn);
    if (!watcher) return;
    this.idleWatchers.delete(conn);
    conn.tls.off('readable', watcher);
  }

  private settle(key: string, conn: Connection | undefined, error?: PortwayError): void {
    const waiter = this.waiters.get(key);
    if (!waiter) return;
    this.waiters.delete(key);
    clearTimeout(waiter.timer);
    const pending = (this.pendingPerDevice.get(waiter.deviceId) ?? 1) - 1;
    if (pending <= 0) this.pendingPerDevice.delete(waiter.deviceId);
    else this.pendingPerDevice.set(waiter.deviceId, pending);
    if (conn) waiter.resolve(conn);
    else waiter.reject(error ?? new PortwayError('PW_INTERNAL'));
  }
}
