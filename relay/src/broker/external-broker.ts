/**
 * The control plane on an external MQTT broker (Mosquitto, EMQX, ...), for several relays that share one
 * broker (DESIGN.md: scale-out with existing engines). The relay keeps its single port: devices still connect
 * to the relay with TLS and their certificate, and each session is carried to the broker by an
 * MqttProxyConnection with the same checks as the embedded broker (client ID, keepalive, will, subtree ACL,
 * packet sizes). The relay's own client connects to the broker directly.
 *
 * Broker URL: `mqtt://[USER@]HOST:PORT` or `mqtts://[USER@]HOST:PORT` (system CAs, or `caPem`); the password
 * is given apart (PORTWAY_BROKER_PASSWORD, read by the relay's main). Every upstream session, the relay's and
 * the devices', uses these credentials; devices' sessions carry their device ID as client ID, so a broker ACL
 * can pin them with a client-ID pattern (Mosquitto: `pattern readwrite pw/v1/dev/%c/#`, docs/configuration.md).
 *
 * Same surface and events as EmbeddedBroker, so the relay and the broker tests use either.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { PortwayError } from '../../../protocol';
import type { BrokerIdentity } from './broker-acl';
import { EMBEDDED_BROKER_DEFAULTS, type BrokerState, type EmbeddedBrokerEvents, type EmbeddedBrokerOptions } from './embedded-broker';
import { PendingPerDevice } from './pending-per-device';
import { MqttProxyConnection } from './mqtt-proxy-connection';

export interface ExternalBrokerOptions extends EmbeddedBrokerOptions {
  /** `mqtt://[USER@]HOST:PORT` or `mqtts://[USER@]HOST:PORT`. */
  readonly url: string;
  readonly password?: string;
  /** PEM of the CA that signed an mqtts:// broker's certificate; default: the system's CAs. */
  readonly caPem?: string;
}

export interface BrokerEndpoint {
  readonly secure: boolean;
  readonly host: string;
  readonly port: number;
  readonly username?: string;
}

/** Parse a broker URL; anything else is PW_CONFIG_INVALID with the reason. */
export function parseBrokerUrl(text: string): BrokerEndpoint {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new PortwayError('PW_CONFIG_INVALID', `broker must be a URL like mqtt://host:1883, not ${JSON.stringify(text.slice(0, 200))}`);
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw new PortwayError('PW_CONFIG_INVALID', `broker URL scheme must be mqtt: or mqtts:, not ${url.protocol}`);
  if (url.password !== '') throw new PortwayError('PW_CONFIG_INVALID', 'put the broker password in PORTWAY_BROKER_PASSWORD, not in the URL');
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') throw new PortwayError('PW_CONFIG_INVALID', 'a broker URL has no path, query or fragment');
  const secure = url.protocol === 'mqtts:';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw new PortwayError('PW_CONFIG_INVALID', 'the broker URL names no host');
  const port = url.port === '' ? (secure ? 8883 : 1883) : Number(url.port);
  return { secure, host, port, ...(url.username !== '' ? { username: decodeURIComponent(url.username) } : {}) };
}

export class ExternalBroker extends EventEmitter<EmbeddedBrokerEvents> {
  private readonly log: Logger;
  private readonly options: ExternalBrokerOptions;
  private readonly endpoint: BrokerEndpoint;
  private brokerState: BrokerState = 'idle';
  private readonly connections = new Set<MqttProxyConnection>();
  private readonly sessions = new Map<string, MqttProxyConnection>();
  private readonly internalClients = new Set<Duplex>();
  /** Connections whose CONNECT the broker has not accepted yet, and their count per device. */
  private readonly pending = new Set<MqttProxyConnection>();
  private readonly pendingPerDevice: PendingPerDevice;
  /**
   * A session whose upstream closed while a newer connection of the same device waited for its CONNACK. The
   * broker ends the older session when it takes the newer CONNECT, and that close can reach the relay before
   * the CONNACK does: the newer connection's answer decides whether the older one was replaced or just closed.
   */
  private readonly supersededSessions = new Map<string, MqttProxyConnection>();

  constructor(deps: { readonly log: Logger }, options: Partial<EmbeddedBrokerOptions> & Pick<ExternalBrokerOptions, 'url' | 'password' | 'caPem'>) {
    super();
    this.log = deps.log.child({ component: 'broker' });
    this.options = { ...EMBEDDED_BROKER_DEFAULTS, ...options };
    this.endpoint = parseBrokerUrl(options.url);
    this.pendingPerDevice = new PendingPerDevice(this.options.maxPendingPerDevice);
  }

  get state(): BrokerState {
    return this.brokerState;
  }

  /** Device sessions the broker accepted, plus the relay's own connections to it. */
  get clientCount(): number {
    let internal = 0;
    for (const s of this.internalClients) if (!s.destroyed && !(s as net.Socket).connecting) internal++;
    return this.sessions.size + internal;
  }

  /** The relay client's credentials at the broker (its CONNECT is written by mqtt.js). */
  get credentials(): { username?: string; password?: string } {
    return { ...(this.endpoint.username !== undefined ? { username: this.endpoint.username } : {}), ...(this.options.password !== undefined ? { password: this.options.password } : {}) };
  }

  async start(): Promise<void> {
    if (this.brokerState === 'running') return;
    if (this.brokerState !== 'idle') throw new PortwayError('PW_SHUTTING_DOWN', 'the broker was stopped');
    this.brokerState = 'running';
    const { host, port, secure } = this.endpoint;
    this.log.info({ broker: `${secure ? 'mqtts' : 'mqtt'}://${host}:${port}` }, 'broker.external.started');
  }

  async stop(): Promise<void> {
    if (this.brokerState === 'stopped') return;
    this.brokerState = 'stopped';
    for (const connection of [...this.connections]) connection.abort('stopped');
    for (const socket of this.internalClients) socket.destroy();
  }

  handleConnection(stream: Duplex, identity: BrokerIdentity): void {
    if (identity.kind !== 'device') throw new TypeError('only device connections are handed to the external broker');
    const log = this.log.child({ deviceId: identity.deviceId });
    stream.on('error', (err: Error) => log.debug({ err }, 'broker.connection.stream_error'));
    if (this.brokerState !== 'running') return this.refuse(stream, log, 'not_running');
    if (this.connections.size - this.sessions.size >= this.options.maxPendingConnections) return this.refuse(stream, log, 'too_many_pending');
    if (!this.pendingPerDevice.tryAdd(identity.deviceId)) return this.refuse(stream, log, 'too_many_pending_for_device');
    const { connectTimeoutMs, keepaliveMinS, keepaliveMaxS, maxPacketBytes, maxPreAuthBytes } = this.options;
    const username = this.endpoint.username;
    const password = this.options.password === undefined ? undefined : Buffer.from(this.options.password, 'utf8');
    const connection = new MqttProxyConnection(stream, identity, log, {
      connectTimeoutMs,
      keepaliveMinS,
      keepaliveMaxS,
      maxPacketBytes,
      maxPreAuthBytes,
      credentials: { ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) },
      openUpstream: () => this.openUpstream(),
      hasRoom: () => this.sessions.has(identity.deviceId) || this.clientCount < this.options.maxClients,
      onConnected: (c) => this.onConnected(c),
      onClose: (c) => this.onClose(c),
    });
    this.connections.add(connection);
    this.pending.add(connection);
    log.debug('broker.connection.accepted');
  }

  /** End every connection of a revoked device now (the broker publishes its will); the count ended. */
  disconnectDevice(deviceId: string): number {
    let ended = 0;
    for (const connection of [...this.connections]) {
      if (connection.identity.deviceId !== deviceId) continue;
      connection.abort('revoked');
      ended++;
    }
    return ended;
  }

  /** A connection to the broker for the relay's own mqtt.js client. */
  connectInternalClient(): Duplex {
    const socket = this.openUpstream();
    this.internalClients.add(socket);
    socket.once('close', () => this.internalClients.delete(socket));
    if (this.brokerState === 'stopped') socket.destroy();
    return socket;
  }

  private openUpstream(): Duplex {
    const { host, port, secure } = this.endpoint;
    const socket = secure
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...(this.options.caPem ? { ca: this.options.caPem } : {}) })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    return socket;
  }

  private onConnected(connection: MqttProxyConnection): void {
    const { deviceId } = connection.identity;
    if (this.pending.delete(connection)) this.pendingPerDevice.remove(deviceId);
    const previous = this.sessions.get(deviceId) ?? this.supersededSessions.get(deviceId);
    this.supersededSessions.delete(deviceId);
    this.sessions.set(deviceId, connection);
    const event = { clientId: deviceId, identity: connection.identity, deviceId };
    if (previous && previous !== connection) {
      // The broker ends the older session too (same client ID); end its device side now, as the embedded broker does.
      this.log.info({ clientId: deviceId, deviceId }, 'broker.session.replaced');
      this.emit('broker.session.replaced', event);
      previous.abort('replaced');
      previous.log.info({ clientId: deviceId, reason: 'replaced' }, 'broker.client.disconnected');
      this.emit('broker.client.disconnected', { ...event, reason: 'replaced' });
    }
    connection.log.info({ clientId: deviceId }, 'broker.client.connected');
    this.emit('broker.client.connected', event);
  }

  private onClose(connection: MqttProxyConnection): void {
    this.connections.delete(connection);
    const { deviceId } = connection.identity;
    if (this.pending.delete(connection)) this.pendingPerDevice.remove(deviceId);
    connection.log.debug({ reason: connection.closeReason }, 'broker.connection.closed');
    if (this.sessions.get(deviceId) === connection) {
      this.sessions.delete(deviceId);
      if (this.successorInFlight(deviceId)) this.supersededSessions.set(deviceId, connection);
      else this.reportDisconnected(connection);
      return;
    }
    // A newer connection that never got its CONNACK: the session it would have replaced just closed.
    const superseded = this.supersededSessions.get(deviceId);
    if (superseded && !this.successorInFlight(deviceId)) {
      this.supersededSessions.delete(deviceId);
      this.reportDisconnected(superseded);
    }
  }

  /** Whether a connection of `deviceId` has sent its CONNECT to the broker and waits for the answer. */
  private successorInFlight(deviceId: string): boolean {
    for (const c of this.pending) if (c.identity.deviceId === deviceId && c.connectSent) return true;
    return false;
  }

  private reportDisconnected(connection: MqttProxyConnection): void {
    const { deviceId } = connection.identity;
    const reason = connection.closeReason ?? 'closed';
    connection.log.info({ clientId: deviceId, reason }, 'broker.client.disconnected');
    this.emit('broker.client.disconnected', { clientId: deviceId, identity: connection.identity, deviceId, reason });
  }

  private refuse(stream: Duplex, log: Logger, reason: string): void {
    log.warn({ reason }, 'broker.connection.refused');
    stream.destroy(new PortwayError(reason === 'not_running' ? 'PW_SHUTTING_DOWN' : 'PW_LIMIT_REACHED'));
  }
}
