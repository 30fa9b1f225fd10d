/**
 * The relay's embedded MQTT broker (aedes, MQTT 3.1.1).
 *
 * Connections arrive already authenticated: the ALPN router hands over TLS sockets with ALPN `mqtt` together
 * with the device ID from the client certificate, and the relay's own mqtt.js client connects in-process
 * through `connectInternalClient()` with the privileged relay identity. On top of that identity:
 *   - CONNECT: a device's client ID must equal its device ID (else CONNACK 2 "identifier rejected"); its
 *     keepalive must lie in [keepaliveMinS, keepaliveMaxS] and its will topic must be one it may publish to
 *     (else CONNACK 5 "not authorized"); beyond maxClients sessions, CONNACK 3. Username and password are
 *     ignored. A CONNECT must arrive within connectTimeoutMs.
 *   - PUBLISH / SUBSCRIBE / delivery are checked with broker-acl; refused publishes are dropped silently,
 *     refused filters get SUBACK 0x80, and a device never receives a message outside its own subtree.
 *   - A new session with the client ID of a live one replaces it (the old one's will is published).
 *   - Inbound packets are capped at maxPacketBytes, and all bytes before the CONNECT is accepted at
 *     maxPreAuthBytes; a connection over either is closed.
 *
 * Events (also logged with the same ids): broker.client.connected, broker.client.disconnected,
 * broker.session.replaced.
 */
import { EventEmitter } from 'node:events';
import { duplexPair, type Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { PortwayError } from '../../../protocol';
import { createAedes, type AedesBroker, type AedesClient, type AedesHooks, type ConnectRequest, type ConnectRefusal } from './aedes-adapter';
import { authorizeDelivery, authorizePublish, authorizeSubscribe, isSafeDeviceId, type BrokerIdentity } from './broker-acl';
import { BrokerConnection, connectionBindings, type BrokerConnectionOptions, type DisconnectReason } from './broker-connection';
import { PendingPerDevice } from './pending-per-device';

export interface EmbeddedBrokerOptions {
  /** Concurrent MQTT sessions, the relay's own client included. */
  readonly maxClients: number;
  /** Connections handed over whose CONNECT has not been accepted yet. */
  readonly maxPendingConnections: number;
  /** The same for one device (pending-per-device.ts). */
  readonly maxPendingPerDevice: number;
  readonly connectTimeoutMs: number;
  readonly keepaliveMinS: number;
  readonly keepaliveMaxS: number;
  readonly maxPacketBytes: number;
  readonly maxPreAuthBytes: number;
  /** A client whose socket does not drain within this is disconnected. */
  readonly drainTimeoutMs: number;
  /** Bound on stop(): after it, remaining connections are destroyed. */
  readonly stopTimeoutMs: number;
}

/** Defaults for every option; the relay's config schema mirrors them. */
export const EMBEDDED_BROKER_DEFAULTS: EmbeddedBrokerOptions = Object.freeze({
  maxClients: 10_000,
  maxPendingConnections: 256,
  maxPendingPerDevice: 4,
  connectTimeoutMs: 10_000,
  keepaliveMinS: 5,
  keepaliveMaxS: 1_200,
  maxPacketBytes: 64 * 1024,
  maxPreAuthBytes: 16 * 1024,
  drainTimeoutMs: 30_000,
  stopTimeoutMs: 5_000,
});

export interface EmbeddedBrokerDeps {
  readonly log: Logger;
}

export interface BrokerClientEvent {
  readonly clientId: string;
  readonly identity: BrokerIdentity;
  /** The device's ID; undefined for the relay identity. */
  readonly deviceId: string | undefined;
}

export interface BrokerDisconnectEvent extends BrokerClientEvent {
  readonly reason: DisconnectReason;
}

export interface EmbeddedBrokerEvents {
  'broker.client.connected': [BrokerClientEvent];
  'broker.client.disconnected': [BrokerDisconnectEvent];
  'broker.session.replaced': [BrokerClientEvent];
}

export type BrokerState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

const RELAY_IDENTITY: BrokerIdentity = Object.freeze({ kind: 'relay' });
const LOGGED_CLIENT_ID_CHARS = 64;

function validateOptions(options: EmbeddedBrokerOptions): EmbeddedBrokerOptions {
  for (const [key, value] of Object.entries(options)) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`broker option ${key} must be a positive integer`);
  }
  if (options.keepaliveMinS > options.keepaliveMaxS) throw new RangeError('keepaliveMinS must not exceed keepaliveMaxS');
  return Object.freeze({ ...options });
}

function validateIdentity(identity: BrokerIdentity): void {
  if (identity.kind === 'relay') return;
  if (identity.kind !== 'device' || typeof identity.deviceId !== 'string' || identity.deviceId.length === 0) {
    throw new TypeError('identity must be { kind: "relay" } or { kind: "device", deviceId }');
  }
}

export class EmbeddedBroker extends EventEmitter<EmbeddedBrokerEvents> {
  private readonly log: Logger;
  private readonly options: EmbeddedBrokerOptions;
  private brokerState: BrokerState = 'idle';
  private aedes: AedesBroker | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  /** Every live connection, by the stream handed over. Bounded by maxClients + maxPendingConnections. */
  private readonly connections = new Map<Duplex, BrokerConnection>();
  /** aedes client → connection, for the hooks. */
  private readonly byClient = new WeakMap<AedesClient, BrokerConnection>();
  /** Connected sessions by client ID. */
  private readonly sessions = new Map<string, BrokerConnection>();
  private pendingCount = 0;
  private readonly pendingPerDevice: PendingPerDevice;
  /** What each connection is given, shared: device connections are size-checked, the relay's own client is not. */
  private readonly guardedOptions: BrokerConnectionOptions;
  private readonly internalOptions: BrokerConnectionOptions;

  constructor(deps: EmbeddedBrokerDeps, options: Partial<EmbeddedBrokerOptions> = {}) {
    super();
    this.log = deps.log.child({ component: 'broker' });
    this.options = validateOptions({ ...EMBEDDED_BROKER_DEFAULTS, ...options });
    this.pendingPerDevice = new PendingPerDevice(this.options.maxPendingPerDevice);
    const { maxPacketBytes, maxPreAuthBytes, connectTimeoutMs } = this.options;
    this.guardedOptions = Object.freeze({ connectTimeoutMs, limits: Object.freeze({ maxPacketBytes, maxPreAuthBytes }), onClose: this.onConnectionClose });
    this.internalOptions = Object.freeze({ connectTimeoutMs, limits: undefined, onClose: this.onConnectionClose });
  }

  get state(): BrokerState {
    return this.brokerState;
  }

  /** Connected MQTT sessions, the relay's own client included. */
  get clientCount(): number {
    return this.sessions.size;
  }

  start(): Promise<void> {
    if (this.brokerState === 'running') return Promise.resolve();
    if (this.brokerState === 'starting' && this.starting) return this.starting;
    if (this.brokerState !== 'idle') return Promise.reject(new PortwayError('PW_SHUTTING_DOWN', 'the broker was stopped'));
    this.brokerState = 'starting';
    this.starting = createAedes({
      // aedes' own CONNECT deadline is only a backstop behind each connection's timer.
      connectTimeoutMs: this.options.connectTimeoutMs + 1_000,
      drainTimeoutMs: this.options.drainTimeoutMs,
      hooks: this.hooks(),
    }).then(
      (aedes) => {
        this.aedes = aedes;
        this.brokerState = 'running';
        this.log.info({ maxClients: this.options.maxClients, maxPacketBytes: this.options.maxPacketBytes }, 'broker.started');
      },
      (err: unknown) => {
        this.brokerState = 'stopped';
        throw new PortwayError('PW_INTERNAL', 'the MQTT broker failed to start', { cause: err });
      },
    );
    return this.starting;
  }

  /** Idempotent; ends every client (publishing wills) and destroys connections still pending. Final. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** Serve one connection whose identity the caller established (TLS client certificate). */
  handleConnection(stream: Duplex, identity: BrokerIdentity): void {
    validateIdentity(identity);
    this.attach(stream, identity, true);
  }

  /** End every connection of a revoked device now (its will is published); the count ended. */
  disconnectDevice(deviceId: string): number {
    let ended = 0;
    for (const connection of [...this.connections.values()]) {
      if (connection.identity.kind !== 'device' || connection.identity.deviceId !== deviceId) continue;
      connection.abort('revoked');
      ended++;
    }
    return ended;
  }

  /** A stream for the relay's own mqtt.js client, connected in-process with the relay identity. */
  connectInternalClient(): Duplex {
    const [relaySide, brokerSide] = duplexPair();
    relaySide.on('error', (err: Error) => this.log.debug({ err }, 'broker.internal_client.stream_error'));
    // Node 20's duplexPair does not pass destruction across; a closed session must reach the mqtt.js client.
    relaySide.once('close', () => brokerSide.destroy());
    brokerSide.once('close', () => relaySide.destroy());
    this.attach(brokerSide, RELAY_IDENTITY, false);
    return relaySide;
  }

  private attach(stream: Duplex, identity: BrokerIdentity, isGuarded: boolean): void {
    const aedes = this.aedes;
    if (this.brokerState !== 'running' || !aedes) return this.refuse(stream, identity, 'not_running');
    if (stream.destroyed) return this.log.child(connectionBindings(identity)).debug('broker.connection.already_closed');
    if (this.pendingCount >= this.options.maxPendingConnections) return this.refuse(stream, identity, 'too_many_pending');
    if (identity.kind === 'device' && !this.pendingPerDevice.tryAdd(identity.deviceId)) return this.refuse(stream, identity, 'too_many_pending_for_device');

    const connection = new BrokerConnection(stream, identity, this.log, isGuarded ? this.guardedOptions : this.internalOptions);
    this.connections.set(stream, connection);
    this.pendingCount++;
    const client = aedes.handle(stream);
    this.byClient.set(client, connection);
    connection.attachClient(client);
    connection.log.debug('broker.connection.accepted');
  }

  private refuse(stream: Duplex, identity: BrokerIdentity, reason: string): void {
    const log = this.log.child(connectionBindings(identity));
    stream.on('error', (err: Error) => log.debug({ err }, 'broker.connection.stream_error'));
    log.warn({ reason }, 'broker.connection.refused');
    stream.destroy(new PortwayError(reason === 'not_running' ? 'PW_SHUTTING_DOWN' : 'PW_LIMIT_REACHED'));
  }

  private hooks(): AedesHooks {
    return {
      authenticate: (client, connect) => this.authenticate(client, connect),
      authorizePublish: (client, topic) => {
        const connection = client ? this.byClient.get(client) : undefined;
        if (!connection) return false;
        const decision = authorizePublish(connection.identity, topic);
        if (decision.allowed) return true;
        connection.deniedPublishes++;
        const level = connection.deniedPublishes === 1 ? 'warn' : 'debug';
        connection.log[level]({ reason: decision.reason, topic: topic.slice(0, 256) }, 'broker.publish.denied');
        return false;
      },
      authorizeSubscribe: (client, filter) => {
        const connection = this.byClient.get(client);
        if (!connection) return false;
        const decision = authorizeSubscribe(connection.identity, filter);
        if (decision.allowed) return true;
        connection.deniedSubscribes++;
        const level = connection.deniedSubscribes === 1 ? 'warn' : 'debug';
        connection.log[level]({ reason: decision.reason, filter: filter.slice(0, 256) }, 'broker.subscribe.denied');
        return false;
      },
      authorizeForward: (client, topic) => {
        const connection = this.byClient.get(client);
        return connection !== undefined && authorizeDelivery(connection.identity, topic).allowed;
      },
      onClientReady: (client) => this.onClientReady(client),
      onClientDisconnect: (client) => {
        const connection = this.byClient.get(client);
        if (connection) this.markDisconnected(connection);
      },
      onClientError: (client, err) => {
        const connection = this.byClient.get(client);
        if (!connection) return;
        const isFirstCause = connection.closeReason === undefined;
        connection.noteReason('protocol_error');
        if (isFirstCause) connection.log.warn({ err }, 'broker.connection.failed');
        else connection.log.debug({ err, reason: connection.closeReason }, 'broker.connection.failed');
      },
      onKeepaliveTimeout: (client) => this.byClient.get(client)?.noteReason('keepalive_timeout'),
      onBrokerError: (err) => this.log.error({ err }, 'broker.internal_error'),
    };
  }

  private authenticate(client: AedesClient, connect: ConnectRequest): ConnectRefusal | undefined {
    const connection = this.byClient.get(client);
    if (!connection || this.brokerState !== 'running') return 'server_unavailable';
    const { identity } = connection;
    const refuse = (refusal: ConnectRefusal, reason: string): ConnectRefusal => {
      connection.noteReason('refused');
      connection.log.warn({ reason, clientId: connect.clientId.slice(0, LOGGED_CLIENT_ID_CHARS) }, 'broker.connect.refused');
      return refusal;
    };
    if (identity.kind === 'device') {
      if (!isSafeDeviceId(identity.deviceId)) return refuse('not_authorized', 'bad_identity');
      if (connect.clientId !== identity.deviceId) return refuse('identifier_rejected', 'client_id_mismatch');
      const { keepaliveMinS, keepaliveMaxS } = this.options;
      if (connect.keepaliveS < keepaliveMinS || connect.keepaliveS > keepaliveMaxS) return refuse('not_authorized', 'keepalive_out_of_range');
      if (connect.willTopic !== undefined && !authorizePublish(identity, connect.willTopic).allowed) return refuse('not_authorized', 'will_not_allowed');
    }
    const clientId = client.id ?? connect.clientId;
    const previous = this.sessions.get(clientId);
    if (!previous && this.sessions.size >= this.options.maxClients) return refuse('server_unavailable', 'max_clients');
    connection.markAuthenticated(clientId);
    if (previous && previous !== connection) {
      // aedes closes the previous session when it registers this one [MQTT-3.1.4-2].
      previous.noteReason('replaced');
      const event = this.clientEvent(connection);
      connection.log.info({ clientId }, 'broker.session.replaced');
      this.emit('broker.session.replaced', event);
    }
    return undefined;
  }

  private onClientReady(client: AedesClient): void {
    const connection = this.byClient.get(client);
    if (!connection || connection.state !== 'connecting' || client.closed || connection.clientId === undefined) return;
    connection.state = 'connected';
    this.settlePending(connection);
    this.sessions.set(connection.clientId, connection);
    connection.log.info({ clientId: connection.clientId }, 'broker.client.connected');
    this.emit('broker.client.connected', this.clientEvent(connection));
  }

  private markDisconnected(connection: BrokerConnection): void {
    if (connection.state !== 'connected') return;
    connection.state = 'closed';
    const clientId = connection.clientId ?? '';
    if (this.sessions.get(clientId) === connection) this.sessions.delete(clientId);
    const reason = connection.closeReason ?? 'closed';
    const { deniedPublishes, deniedSubscribes } = connection;
    connection.log.info({ clientId, reason, deniedPublishes, deniedSubscribes }, 'broker.client.disconnected');
    this.emit('broker.client.disconnected', { ...this.clientEvent(connection), reason });
  }

  /** One function for every connection (an arrow per connection would be kept per session). */
  private readonly onConnectionClose = (connection: BrokerConnection): void => {
    this.connections.delete(connection.stream);
    if (connection.state === 'connecting') {
      connection.state = 'closed';
      this.settlePending(connection);
      const reason = connection.closeReason ?? 'closed';
      // A connection that never sent its CONNECT (a slowloris, or garbage that looks like an unfinished packet)
      // gets its one coded line like every other rejected connection; a peer that just went away does not.
      if (reason === 'connect_timeout') connection.log.info({ code: 'PW_HANDSHAKE_TIMEOUT', reason }, 'broker.connection.closed');
      else connection.log.debug({ reason }, 'broker.connection.closed');
    }
    this.markDisconnected(connection);
  };

  /** A pending connection was accepted or closed. */
  private settlePending(connection: BrokerConnection): void {
    this.pendingCount--;
    if (connection.identity.kind === 'device') this.pendingPerDevice.remove(connection.identity.deviceId);
  }

  private clientEvent(connection: BrokerConnection): BrokerClientEvent {
    const { identity } = connection;
    return { clientId: connection.clientId ?? '', identity, deviceId: identity.kind === 'device' ? identity.deviceId : undefined };
  }

  private async doStop(): Promise<void> {
    if (this.starting) await this.starting.catch((err: unknown) => this.log.debug({ err }, 'broker.start.failed'));
    const aedes = this.aedes;
    this.brokerState = 'stopping';
    const deadline = AbortSignal.timeout(this.options.stopTimeoutMs);
    const expired = new Promise<'expired'>((resolve) => deadline.addEventListener('abort', () => resolve('expired'), { once: true }));
    for (const connection of this.connections.values()) connection.noteReason('stopped');
    // aedes ends the registered sessions (publishing their wills); the rest are still waiting for CONNECT.
    if (aedes && (await Promise.race([aedes.close(), expired])) === 'expired') this.log.warn('broker.stop.timeout');
    const remaining = [...this.connections.values()];
    const closed = Promise.all(remaining.map((c) => new Promise<void>((resolve) => c.stream.once('close', () => resolve()))));
    for (const connection of remaining) connection.abort('stopped');
    if ((await Promise.race([closed, expired])) === 'expired') this.log.warn({ open: this.connections.size }, 'broker.stop.timeout');
    this.aedes = undefined;
    this.brokerState = 'stopped';
    if (aedes) this.log.info('broker.stopped');
  }
}
