/**
 * The relay's data plane: every TLS connection with ALPN "portway-data/1".
 *
 * - A user's forward proxy (user certificate) sends CLIENT_OPEN; the relay authorizes it and answers
 *   RELAY_STATUS. Unprimed: the relay first gets an agent socket (a pooled one, or asks the device to dial),
 *   then answers. Primed: it answers at once and pairs when the client's first inner bytes arrive.
 * - A device's agent (device certificate) sends AGENT_HELLO: an idle pooled socket, or the socket it was
 *   asked to dial for one stream (one-time token).
 * - Paired: STREAM_OPEN goes to the agent, then the two sockets are spliced. The relay never parses or
 *   decrypts what flows after that: it is the inner end-to-end TLS session.
 * - Handoff (protocol/tls-records.ts): CLIENT_OPEN is the client's last TLS record, a successful
 *   RELAY_STATUS the relay's last to the client, STREAM_OPEN its last to the agent; each is followed by a
 *   marker, after which the TCP connections carry the inner session and the relay splices TCP to TCP.
 *   Refusals are sent in TLS without a marker (the connection ends there).
 */
import { randomBytes } from 'node:crypto';
import {
  agentHelloSchema,
  clientOpenSchema,
  encodeFrame,
  FrameType,
  MAX_PREAUTH_FRAME_BYTES,
  PortwayError,
  type ClientOpen,
  type ErrorCode,
} from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import { readFrame } from '../../../shared/read-frame';
import type { HandoffCarrier } from '../../../shared/tls-handoff';
import { canReach, checkCertToken, checkDeviceCert } from '../access';
import type { DeviceRegistry } from '../control/device-registry';
import type { Device, Share, Store, User } from '../store';
import { dropConnection, type Connection } from '../tls-front';
import { AgentSockets } from './agent-sockets';
import type { DataMisbehaviour } from './data-misbehaviour';
import { LiveStreams, type StreamPair } from './live-streams';
import { splice } from './splice';

export interface DataPlaneOptions {
  readonly firstFrameTimeoutMs: number;
  readonly dialTimeoutMs: number;
  readonly primedIdleMs: number;
  readonly streamCloseGraceMs: number;
  readonly maxPooledPerDevice: number;
  readonly maxPendingDialsPerDevice: number;
  readonly maxStreamsPerDevice: number;
  readonly maxPrimedPerUser: number;
}

export interface DataPlaneStats {
  streamsOpen: number;
  streamsTotal: number;
  primed: number;
  pooled: number;
  pendingDials: number;
  /** Bytes the relay holds in user space for spliced streams (queued writes on their TCP sockets). */
  bufferedBytes: number;
  /** Bytes the relay wrote to the device's and the client's socket of every stream, ended and live (outer TLS before the handoff, the spliced inner session after). */
  bytesToDevice: number;
  bytesToClient: number;
  rejects: Partial<Record<ErrorCode, number>>;
}

interface Primed {
  readonly conn: Connection;
  readonly userId: string;
  readonly deviceId: string;
}

export class DataPlane {
  private readonly agentSockets: AgentSockets;
  /** Spliced streams by device (limits, metrics, and cutting them on revocation). */
  private readonly live = new LiveStreams();
  private readonly primed = new Set<Primed>();
  private readonly primedPerUser = new Map<string, number>();
  private readonly abort = new AbortController();
  private readonly rejects: Partial<Record<ErrorCode, number>> = {};
  private readonly onOffline = (deviceId: string): void => this.deviceOffline(deviceId);

  constructor(
    private readonly deps: { log: Logger; store: Store; registry: DeviceRegistry; misbehaviour?: DataMisbehaviour },
    private readonly options: DataPlaneOptions,
  ) {
    this.agentSockets = new AgentSockets(options);
  }

  start(): void {
    this.deps.registry.on('offline', this.onOffline);
  }

  stop(): void {
    this.abort.abort();
    this.deps.registry.off('offline', this.onOffline);
    this.agentSockets.closeAll();
    for (const p of this.primed) dropConnection(p.conn);
  }

  stats(): DataPlaneStats {
    return {
      ...this.live.stats(),
      primed: this.primed.size,
      pooled: this.agentSockets.pooledCount(),
      pendingDials: this.agentSockets.pendingDials,
      rejects: { ...this.rejects },
    };
  }

  handleConnection(conn: Connection): void {
    conn.tls.on('error', () => {
      // Every path below ends the connection itself; socket errors only cut it short.
    });
    this.accept(conn).catch((err: unknown) => this.refuse(conn, err));
  }

  private async accept(conn: Connection): Promise<void> {
    const frame = await readFrame(conn.tls, {
      expectPreamble: true,
      maxFrameBytes: MAX_PREAUTH_FRAME_BYTES,
      timeoutMs: this.options.firstFrameTimeoutMs,
      signal: this.abort.signal,
    });
    if (!conn.carrier) throw new PortwayError('PW_BAD_PREAMBLE', 'data socket without the handoff layer');
    if (frame.type === FrameType.CLIENT_OPEN) {
      const open = clientOpenSchema.safeParse(frame.payload);
      if (!open.success) throw new PortwayError('PW_BAD_FRAME', 'malformed CLIENT_OPEN');
      await this.acceptClient(conn, conn.carrier, open.data);
    } else if (frame.type === FrameType.AGENT_HELLO) {
      const hello = agentHelloSchema.safeParse(frame.payload);
      if (!hello.success) throw new PortwayError('PW_BAD_FRAME', 'malformed AGENT_HELLO');
      await this.acceptAgent(conn, hello.data.kind === 'dial' ? hello.data.token : undefined);
    } else {
      throw new PortwayError('PW_BAD_FRAME', `frame type 0x${frame.type.toString(16)} cannot open a data socket`);
    }
  }

  /** The client's marker follows CLIENT_OPEN at once; nothing may come between them. */
  private async awaitClientHandoff(conn: Connection, carrier: HandoffCarrier): Promise<void> {
    await carrier.whenPeerHandsOff(this.options.firstFrameTimeoutMs, 'no handoff after CLIENT_OPEN');
    if (conn.tls.readableLength > 0) throw new PortwayError('PW_BAD_FRAME', 'data between CLIENT_OPEN and the handoff');
  }

  /** Send the relay's last TLS frame on a data socket, then its handoff marker; resolves once both are queued. */
  private sendLast(conn: Connection, frame: Buffer): Promise<void> {
    return new Promise<void>((resolve) => {
      conn.tls.write(frame, () => {
        conn.carrier?.handOffWrites();
        resolve();
      });
    });
  }

  private async acceptAgent(conn: Connection, token: string | undefined): Promise<void> {
    const device = await this.authenticateDevice(conn);
    conn.raw.setKeepAlive(true, 15_000);
    if (token === undefined) {
      if (!this.deps.registry.isOnline(device.id)) throw new PortwayError('PW_DEVICE_OFFLINE', 'pooled socket from a device without a control session');
      if (!this.agentSockets.addPooled(device.id, conn)) throw new PortwayError('PW_LIMIT_REACHED', 'pool of data sockets is full');
      this.deps.log.debug({ deviceId: device.id }, 'relay.pool.added');
      return;
    }
    if (!this.agentSockets.fulfilDial(device.id, token, conn)) throw new PortwayError('PW_STREAM_TOKEN_INVALID');
  }

  private async authenticateDevice(conn: Connection): Promise<Device> {
    if (conn.peer.role === 'none') throw new PortwayError(conn.peer.certCode ?? 'PW_CLIENT_CERT_REQUIRED', conn.peer.certError);
    if (conn.peer.role !== 'device' || !conn.peer.id) throw new PortwayError('PW_WRONG_ROLE', 'a user certificate cannot act as a device');
    return checkDeviceCert(await this.deps.store.getDevice(conn.peer.id), conn.peer);
  }

  private async authenticateUser(conn: Connection): Promise<User> {
    if (conn.peer.role === 'none') throw new PortwayError(conn.peer.certCode ?? 'PW_CLIENT_CERT_REQUIRED', conn.peer.certError);
    if (conn.peer.role !== 'user' || !conn.peer.id || !conn.peer.certFingerprint) throw new PortwayError('PW_WRONG_ROLE', 'a device certificate cannot open streams as a user');
    const [user, cert] = await Promise.all([this.deps.store.getUser(conn.peer.id), this.deps.store.getUserCert(conn.peer.certFingerprint)]);
    if (!user || !cert || cert.userId !== user.id) throw new PortwayError('PW_UNAUTHENTICATED', 'user unknown or certificate not on record');
    checkCertToken(cert, Date.now()); // the token the certificate was issued with: revoked, expired, read-only
    if (cert.revokedAt !== undefined) throw new PortwayError('PW_UNAUTHENTICATED', 'certificate revoked');
    return user;
  }

  private async resolveDevice(user: User, open: ClientOpen): Promise<Device> {
    // The user's shares are read once per request, whatever the name matched: a device that exists but is not
    // the user's then costs the same store work as one that does not exist (no timing oracle for device names;
    // test/integration/device-enumeration.test.ts). Admins reach every device and need no share.
    const [found, shares] = await Promise.all([this.deps.store.findDevices(open.device), user.isAdmin ? Promise.resolve([]) : this.deps.store.listShares({ userId: user.id })]);
    const shareOf = (d: Device): Share | undefined => shares.find((s) => s.deviceId === d.id);
    const visible = found.filter((d) => canReach(user, d, shareOf(d)));
    // A device that exists but is not the user's gets the same answer as one that does not exist, so device
    // names and IDs cannot be enumerated. (PW_NOT_AUTHORIZED is for a reachable device's unshared service.)
    if (visible.length === 0) throw new PortwayError('PW_UNKNOWN_DEVICE', `no device named ${JSON.stringify(open.device)}`);
    if (visible.length > 1) throw new PortwayError('PW_BAD_REQUEST', `several devices are named ${JSON.stringify(open.device)}; use the device ID`);
    const device = visible[0] as Device;
    if (!canReach(user, device, shareOf(device), open.service)) {
      throw new PortwayError('PW_NOT_AUTHORIZED', `not authorized to reach service ${JSON.stringify(open.service)} on ${device.name}`);
    }
    if (!this.deps.registry.isOnline(device.id)) throw new PortwayError('PW_DEVICE_OFFLINE', `device ${device.name} is offline`);
    if (!this.deps.registry.services(device.id).some((s) => s.name === open.service)) {
      throw new PortwayError('PW_SERVICE_NOT_EXPOSED', `device ${device.name} does not expose a service named ${JSON.stringify(open.service)}`);
    }
    return device;
  }

  private async acceptClient(conn: Connection, carrier: HandoffCarrier, open: ClientOpen): Promise<void> {
    const user = await this.authenticateUser(conn);
    const device = await this.resolveDevice(user, open);
    await this.awaitClientHandoff(conn, carrier);
    const streamId = randomBytes(8).toString('hex');
    const ok = encodeFrame(FrameType.RELAY_STATUS, { ok: true, streamId, deviceId: device.id, deviceName: device.name, deviceKey: device.keyFingerprint });
    const log = this.deps.log.child({ streamId, deviceId: device.id, userId: user.id, service: open.service });
    this.deps.registry.warmPool(device.id);
    const agentDeviceId = await this.agentDeviceFor(device, open.service);
    if (open.prime) {
      this.trackPrimed(conn, user.id, device.id);
      await this.sendLast(conn, ok);
      await this.waitForFirstBytes(conn);
      this.untrackPrimed(conn);
      const agent = await this.acquireAgent(agentDeviceId).catch((err: unknown) => {
        // The client already runs its inner TLS: it cannot read a status frame any more; cut it.
        log.info({ code: err instanceof PortwayError ? err.code : 'PW_INTERNAL' }, 'relay.stream.pair_failed');
        dropConnection(conn, { reset: true });
        throw err;
      });
      this.pair(conn, agent, { streamId, deviceId: device.id, service: open.service, user, log });
    } else {
      const agent = await this.acquireAgent(agentDeviceId);
      if (conn.raw.destroyed) {
        dropConnection(agent);
        return;
      }
      await this.sendLast(conn, ok);
      this.pair(conn, agent, { streamId, deviceId: device.id, service: open.service, user, log });
    }
  }

  /** The device whose agent socket serves a stream to `device`: itself, unless a test relay splices to another. */
  private async agentDeviceFor(device: Device, service: string): Promise<string> {
    const misbehaviour = this.deps.misbehaviour;
    if (misbehaviour?.name !== 'splice-other-device' || !misbehaviour.appliesTo(service)) return device.id;
    const other = (await this.deps.store.listDevices()).find((d) => d.id !== device.id && d.ownerUserId === device.ownerUserId && this.deps.registry.isOnline(d.id));
    return other?.id ?? device.id;
  }

  private trackPrimed(conn: Connection, userId: string, deviceId: string): void {
    const n = this.primedPerUser.get(userId) ?? 0;
    if (n >= this.options.maxPrimedPerUser) throw new PortwayError('PW_LIMIT_REACHED', 'too many primed sockets');
    this.primedPerUser.set(userId, n + 1);
    this.primed.add({ conn, userId, deviceId });
  }

  private untrackPrimed(conn: Connection): void {
    for (const p of this.primed) {
      if (p.conn !== conn) continue;
      this.primed.delete(p);
      const n = (this.primedPerUser.get(p.userId) ?? 1) - 1;
      if (n <= 0) this.primedPerUser.delete(p.userId);
      else this.primedPerUser.set(p.userId, n);
    }
  }

  /** A primed socket (already handed off) waits on TCP for the client's first inner bytes. */
  private waitForFirstBytes(conn: Connection): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => done(new PortwayError('PW_HANDSHAKE_TIMEOUT', 'primed socket idle too long')), this.options.primedIdleMs);
      const done = (err?: PortwayError): void => {
        clearTimeout(timer);
        conn.raw.off('readable', onReadable);
        conn.raw.off('close', onClose);
        if (err) {
          this.untrackPrimed(conn);
          reject(err);
        } else resolve();
      };
      const onReadable = (): void => {
        if (conn.raw.readableLength > 0) done();
        else if (conn.raw.readableEnded) done(new PortwayError('PW_STREAM_ABORTED', 'primed socket closed'));
      };
      const onClose = (): void => done(new PortwayError('PW_STREAM_ABORTED', 'primed socket closed'));
      conn.raw.on('readable', onReadable);
      conn.raw.once('close', onClose);
      onReadable();
    });
  }

  private async acquireAgent(deviceId: string): Promise<Connection> {
    if (this.live.countFor(deviceId) >= this.options.maxStreamsPerDevice) throw new PortwayError('PW_LIMIT_REACHED', 'too many streams on this device');
    const pooled = this.agentSockets.takePooled(deviceId);
    if (pooled) return pooled;
    const { token, socket } = this.agentSockets.expectDial(deviceId);
    this.deps.registry.requestDial(deviceId, token).catch(() => this.agentSockets.cancelDial(token));
    return socket;
  }

  private pair(client: Connection, agent: Connection, s: { streamId: string; deviceId: string; service: string; user: User; log: Logger }): void {
    const certFingerprint = client.peer.certFingerprint as string;
    const service = this.deps.misbehaviour?.serviceForAgent(s.service) ?? s.service;
    const streamOpen = encodeFrame(FrameType.STREAM_OPEN, { streamId: s.streamId, service, user: { id: s.user.id, name: s.user.name, certFingerprint } });
    const live: StreamPair = [client, agent];
    this.live.add(s.deviceId, live);
    s.log.info('relay.stream.opened');
    this.sendLast(agent, streamOpen)
      .then(() => {
        const tamperAtoB = this.deps.misbehaviour?.appliesTo(s.service) ? this.deps.misbehaviour.clientToAgent() : undefined;
        return splice(client, agent, { closeGraceMs: this.options.streamCloseGraceMs, handoffTimeoutMs: this.options.firstFrameTimeoutMs, ...(tamperAtoB ? { tamperAtoB } : {}) });
      })
      .then(
        (result) => {
          this.live.remove(s.deviceId, live);
          s.log.info({ outcome: result.outcome, bytesUp: result.bytesAtoB, bytesDown: result.bytesBtoA }, 'relay.stream.closed');
        },
        (err: unknown) => {
          this.live.remove(s.deviceId, live);
          s.log.error({ err }, 'relay.stream.splice_failed');
        },
      );
  }

  // ---- revocation (relay/src/control/device-revocations.ts calls dropDevice; the token and share routes dropClientStreams)

  /** A revoked device: its pooled sockets, waiting dials, primed client sockets and spliced streams end now (reset). */
  dropDevice(deviceId: string): number {
    this.deviceOffline(deviceId, new PortwayError('PW_DEVICE_REVOKED'));
    return this.live.reset((d) => d === deviceId);
  }

  /**
   * Revoked user credentials (a token and the certificates issued with it) or a removed share: the matching clients'
   * spliced streams and primed sockets end now (reset). `deviceId` narrows it to one device; `userId` to one user;
   * `certFingerprints` to the clients that authenticated with one of these certificates.
   */
  dropClientStreams(filter: { readonly deviceId?: string; readonly userId?: string; readonly certFingerprints?: ReadonlySet<string> }): number {
    const matches = (peer: { readonly id?: string; readonly certFingerprint?: string }): boolean =>
      (filter.userId === undefined || peer.id === filter.userId) &&
      (filter.certFingerprints === undefined || (peer.certFingerprint !== undefined && filter.certFingerprints.has(peer.certFingerprint)));
    const dropped = this.live.reset((deviceId, client) => (filter.deviceId === undefined || deviceId === filter.deviceId) && matches(client.peer));
    for (const p of [...this.primed]) {
      if ((filter.deviceId !== undefined && p.deviceId !== filter.deviceId) || !matches(p.conn.peer)) continue;
      this.untrackPrimed(p.conn);
      dropConnection(p.conn, { reset: true });
    }
    return dropped;
  }

  private deviceOffline(deviceId: string, reason = new PortwayError('PW_DEVICE_OFFLINE')): void {
    this.agentSockets.dropDevice(deviceId, reason);
    for (const p of this.primed) {
      if (p.deviceId !== deviceId) continue;
      this.untrackPrimed(p.conn);
      // Its TLS layer has ended (handoff): closing it is how the client learns; it opens a cold socket next.
      dropConnection(p.conn);
    }
  }

  private refuse(conn: Connection, err: unknown): void {
    const error = err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', 'internal error', { cause: err });
    this.rejects[error.code] = (this.rejects[error.code] ?? 0) + 1;
    const level = error.code === 'PW_INTERNAL' ? 'error' : 'info';
    this.deps.log[level]({ remote: conn.remote, code: error.code, reason: error.message, err: error.code === 'PW_INTERNAL' ? err : undefined }, 'relay.data.refused');
    const carrier = conn.carrier;
    if (conn.tls.destroyed || conn.raw.destroyed || (carrier && (carrier.destroyed || carrier.handedOffWrites))) {
      // No frame can be sent any more (the TLS layer failed, or ended at the handoff): cut the connection so
      // the peer sees an error.
      dropConnection(conn, { reset: true });
      return;
    }
    // A client still reading frames learns why; everyone else just sees the socket end.
    conn.tls.end(encodeFrame(FrameType.RELAY_STATUS, error.toWire()));
    const timer = setTimeout(() => dropConnection(conn), 2_000);
    timer.unref();
    conn.raw.once('close', () => clearTimeout(timer));
  }

}
