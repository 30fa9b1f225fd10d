/**
 * One device's MQTT 3.1.1 session, carried by the relay to an external broker (external-broker.ts) with the
 * same rules the embedded broker applies, so a device gets the same answers in both modes:
 *
 *   device ──TLS (ALPN mqtt, device certificate)──> relay: parse, check ──TCP or TLS──> broker
 *
 * - CONNECT must come first and within connectTimeoutMs: MQTT 3.1.1 only (else CONNACK 1), client ID equal to
 *   the device ID (CONNACK 2), keepalive in [keepaliveMinS, keepaliveMaxS] and a will inside the device's
 *   subtree (CONNACK 5), a free session slot (CONNACK 3). Only then does the relay open a connection to the
 *   broker and send the CONNECT on, with the relay's broker credentials (the device's own are dropped).
 * - PUBLISH outside the subtree is dropped and acknowledged here (PUBACK, or PUBREC then PUBCOMP), as aedes
 *   does; SUBSCRIBE goes on with the allowed filters only, and the SUBACK gets 0x80 at the refused positions
 *   (all refused: answered here); a message the broker delivers outside the subtree is dropped (and
 *   acknowledged to the broker).
 * - Inbound bytes pass the packet size guard before they are parsed. Every packet is re-encoded by
 *   mqtt-packet, so nothing the relay did not parse reaches either side.
 * - Either side closing closes both; a device that vanishes without DISCONNECT makes the broker publish its
 *   will, exactly as with the embedded broker. Keepalive is the broker's: it closes the upstream session.
 */
import type { Duplex } from 'node:stream';
import mqttPacket, { type IConnectPacket, type IPublishPacket, type ISubscribePacket, type Packet } from 'mqtt-packet';
import type { Logger } from 'pino';
import { authorizeDelivery, authorizePublish, authorizeSubscribe, isSafeDeviceId, type BrokerIdentity } from './broker-acl';
import type { ConnectionState, DisconnectReason } from './broker-connection';
import { PacketSizeGuard } from './packet-size-guard';

export interface MqttProxyOptions {
  readonly connectTimeoutMs: number;
  readonly keepaliveMinS: number;
  readonly keepaliveMaxS: number;
  readonly maxPacketBytes: number;
  readonly maxPreAuthBytes: number;
  /** The relay's credentials at the broker, sent in every upstream CONNECT. */
  readonly credentials: { readonly username?: string; readonly password?: Buffer };
  /** Opens a connection to the broker. */
  readonly openUpstream: () => Duplex;
  /** Whether another session may start (CONNACK 3 otherwise). */
  readonly hasRoom: () => boolean;
  readonly onConnected: (connection: MqttProxyConnection) => void;
  readonly onClose: (connection: MqttProxyConnection) => void;
}

const CONNACK_UNACCEPTABLE_PROTOCOL = 1;
const CONNACK_IDENTIFIER_REJECTED = 2;
const CONNACK_SERVER_UNAVAILABLE = 3;
const CONNACK_NOT_AUTHORIZED = 5;
const SUBACK_FAILURE = 0x80;
const LOGGED_CHARS = 256;
/** After a DISCONNECT, how long the broker gets to close the upstream socket before it is destroyed. */
const UPSTREAM_CLOSE_GRACE_MS = 5_000;

export class MqttProxyConnection {
  state: ConnectionState = 'connecting';
  closeReason: DisconnectReason | undefined;
  deniedPublishes = 0;
  deniedSubscribes = 0;
  private upstream: Duplex | undefined;
  private readonly guard: PacketSizeGuard;
  private readonly fromDevice = mqttPacket.parser({ protocolVersion: 4 });
  private readonly fromBroker = mqttPacket.parser({ protocolVersion: 4 });
  /** QoS 2 publishes dropped here, by packet ID: the PUBREL that follows is answered here too. */
  private readonly droppedFromDevice = new Set<number>();
  private readonly droppedFromBroker = new Set<number>();
  /** SUBSCRIBEs sent on with some filters removed: the refused positions, by message ID. */
  private readonly refusedFilters = new Map<number, { readonly positions: readonly number[]; readonly total: number }>();
  private connectTimer: NodeJS.Timeout | undefined;
  private sawDisconnect = false;

  constructor(
    readonly stream: Duplex,
    readonly identity: Extract<BrokerIdentity, { kind: 'device' }>,
    readonly log: Logger,
    private readonly options: MqttProxyOptions,
  ) {
    this.guard = new PacketSizeGuard({ maxPacketBytes: options.maxPacketBytes, maxPreAuthBytes: options.maxPreAuthBytes });
    this.fromDevice.on('packet', (packet: Packet) => this.onDevicePacket(packet));
    this.fromDevice.on('error', () => this.abort('protocol_error'));
    this.fromBroker.on('packet', (packet: Packet) => this.onBrokerPacket(packet));
    this.fromBroker.on('error', (err: Error) => {
      this.log.warn({ err }, 'broker.upstream.protocol_error');
      this.abort('protocol_error');
    });
    stream.on('data', (chunk: Buffer) => this.onDeviceBytes(chunk));
    stream.on('error', (err: Error) => this.log.debug({ err }, 'broker.connection.stream_error'));
    stream.on('end', () => this.abort('closed'));
    stream.on('close', () => this.abort('closed'));
    this.connectTimer = setTimeout(() => this.abort('connect_timeout'), options.connectTimeoutMs);
  }

  /** The device's CONNECT passed the relay's checks and went to the broker. */
  get connectSent(): boolean {
    return this.upstream !== undefined;
  }

  get clientId(): string | undefined {
    return this.state === 'connected' ? this.identity.deviceId : undefined;
  }

  /** Close both sides now; the first cause is kept. Idempotent. */
  abort(reason: DisconnectReason): void {
    this.closeReason ??= reason;
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.connectTimer);
    this.stream.destroy();
    // After the device's DISCONNECT the upstream socket is ended, not destroyed: destroying it could drop the
    // DISCONNECT still queued, and the broker would publish the will of a device that left cleanly.
    const upstream = this.upstream;
    if (upstream && this.sawDisconnect && !upstream.destroyed) {
      upstream.end();
      const timer = setTimeout(() => upstream.destroy(), UPSTREAM_CLOSE_GRACE_MS);
      timer.unref();
      upstream.once('close', () => clearTimeout(timer));
    } else {
      upstream?.destroy();
    }
    this.options.onClose(this);
  }

  private onDeviceBytes(chunk: Buffer): void {
    const verdict = this.guard.push(chunk);
    if (verdict !== 'ok') {
      this.log.warn({ verdict, isAuthenticated: this.state === 'connected' }, 'broker.packet.rejected');
      this.abort(verdict === 'too_large' ? 'too_large' : 'protocol_error');
      return;
    }
    this.fromDevice.parse(chunk);
  }

  private onDevicePacket(packet: Packet): void {
    if (this.state === 'closed') return;
    if (this.upstream === undefined) {
      if (packet.cmd !== 'connect') return this.abort('protocol_error');
      return this.onConnect(packet);
    }
    switch (packet.cmd) {
      case 'publish':
        return this.onDevicePublish(packet);
      case 'pubrel':
        if (packet.messageId !== undefined && this.droppedFromDevice.delete(packet.messageId)) return this.toDevice({ cmd: 'pubcomp', messageId: packet.messageId });
        return this.toBroker(packet);
      case 'subscribe':
        return this.onSubscribe(packet);
      case 'unsubscribe':
      case 'puback':
      case 'pubrec':
      case 'pubcomp':
      case 'pingreq':
        return this.toBroker(packet);
      case 'disconnect':
        this.toBroker(packet);
        this.upstream.end();
        this.closeReason ??= 'closed';
        this.sawDisconnect = true;
        return;
      default:
        // A second CONNECT, or a packet only a server sends.
        return this.abort('protocol_error');
    }
  }

  private onConnect(connect: IConnectPacket): void {
    const refuse = (returnCode: number, reason: string): void => {
      this.log.warn({ reason, clientId: String(connect.clientId).slice(0, 64) }, 'broker.connect.refused');
      this.closeReason ??= 'refused';
      this.stream.write(mqttPacket.generate({ cmd: 'connack', returnCode, sessionPresent: false }), () => this.abort('refused'));
    };
    const { deviceId } = this.identity;
    const keepalive = connect.keepalive ?? 0;
    if (connect.protocolVersion !== 4) return refuse(CONNACK_UNACCEPTABLE_PROTOCOL, 'protocol_version');
    if (!isSafeDeviceId(deviceId)) return refuse(CONNACK_NOT_AUTHORIZED, 'bad_identity');
    if (connect.clientId !== deviceId) return refuse(CONNACK_IDENTIFIER_REJECTED, 'client_id_mismatch');
    if (keepalive < this.options.keepaliveMinS || keepalive > this.options.keepaliveMaxS) return refuse(CONNACK_NOT_AUTHORIZED, 'keepalive_out_of_range');
    if (connect.will && !authorizePublish(this.identity, connect.will.topic).allowed) return refuse(CONNACK_NOT_AUTHORIZED, 'will_not_allowed');
    if (!this.options.hasRoom()) return refuse(CONNACK_SERVER_UNAVAILABLE, 'max_clients');

    const upstream = this.options.openUpstream();
    this.upstream = upstream;
    upstream.on('data', (chunk: Buffer) => this.fromBroker.parse(chunk));
    upstream.on('error', (err: Error) => this.log.info({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'broker.upstream.failed'));
    upstream.on('close', () => this.abort('closed'));
    const { username, password } = this.options.credentials;
    const { username: _deviceUsername, password: _devicePassword, ...rest } = connect;
    this.toBroker({ ...rest, clientId: deviceId, ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) });
  }

  private onDevicePublish(packet: IPublishPacket): void {
    const decision = authorizePublish(this.identity, packet.topic);
    if (decision.allowed) return this.toBroker(packet);
    this.deniedPublishes++;
    this.log[this.deniedPublishes === 1 ? 'warn' : 'debug']({ reason: decision.reason, topic: packet.topic.slice(0, LOGGED_CHARS) }, 'broker.publish.denied');
    if (packet.messageId === undefined) return;
    if (packet.qos === 1) this.toDevice({ cmd: 'puback', messageId: packet.messageId });
    if (packet.qos === 2) {
      this.droppedFromDevice.add(packet.messageId);
      this.toDevice({ cmd: 'pubrec', messageId: packet.messageId });
    }
  }

  private onSubscribe(packet: ISubscribePacket): void {
    const positions: number[] = [];
    const allowed = packet.subscriptions.filter((s, i) => {
      const decision = authorizeSubscribe(this.identity, s.topic);
      if (decision.allowed) return true;
      positions.push(i);
      this.deniedSubscribes++;
      this.log[this.deniedSubscribes === 1 ? 'warn' : 'debug']({ reason: decision.reason, filter: s.topic.slice(0, LOGGED_CHARS) }, 'broker.subscribe.denied');
      return false;
    });
    if (allowed.length === 0) {
      return this.toDevice({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map(() => SUBACK_FAILURE) });
    }
    if (positions.length > 0) this.refusedFilters.set(packet.messageId ?? 0, { positions, total: packet.subscriptions.length });
    this.toBroker({ ...packet, subscriptions: allowed });
  }

  private onBrokerPacket(packet: Packet): void {
    if (this.state === 'closed') return;
    switch (packet.cmd) {
      case 'connack':
        if (packet.returnCode !== 0) {
          this.log.warn({ returnCode: packet.returnCode }, 'broker.upstream.refused');
          this.closeReason ??= 'refused';
          this.stream.write(mqttPacket.generate(packet), () => this.abort('refused'));
          return;
        }
        clearTimeout(this.connectTimer);
        this.state = 'connected';
        this.guard.markAuthenticated();
        this.toDevice(packet);
        this.options.onConnected(this);
        return;
      case 'publish': {
        if (authorizeDelivery(this.identity, packet.topic).allowed) return this.toDevice(packet);
        if (packet.messageId === undefined) return;
        if (packet.qos === 1) this.toBroker({ cmd: 'puback', messageId: packet.messageId });
        if (packet.qos === 2) {
          this.droppedFromBroker.add(packet.messageId);
          this.toBroker({ cmd: 'pubrec', messageId: packet.messageId });
        }
        return;
      }
      case 'pubrel':
        if (packet.messageId !== undefined && this.droppedFromBroker.delete(packet.messageId)) return this.toBroker({ cmd: 'pubcomp', messageId: packet.messageId });
        return this.toDevice(packet);
      case 'suback': {
        const refused = this.refusedFilters.get(packet.messageId ?? 0);
        if (!refused) return this.toDevice(packet);
        this.refusedFilters.delete(packet.messageId ?? 0);
        const granted = [...packet.granted];
        const merged: number[] = [];
        for (let i = 0; i < refused.total; i++) merged.push(refused.positions.includes(i) ? SUBACK_FAILURE : ((granted.shift() as number | undefined) ?? SUBACK_FAILURE));
        return this.toDevice({ ...packet, granted: merged });
      }
      default:
        return this.toDevice(packet);
    }
  }

  private toBroker(packet: Packet): void {
    this.write(this.upstream, this.stream, packet);
  }

  private toDevice(packet: Packet): void {
    this.write(this.stream, this.upstream, packet);
  }

  /** Write to `sink`; while it is full, stop reading `source` (the other side), so memory stays bounded. */
  private write(sink: Duplex | undefined, source: Duplex | undefined, packet: Packet): void {
    if (!sink || sink.destroyed) return;
    if (!sink.write(mqttPacket.generate(packet)) && source && !source.isPaused()) {
      source.pause();
      sink.once('drain', () => source.resume());
    }
  }
}
