/**
 * The agent's MQTT control connection: mutual TLS with the device certificate (ALPN mqtt), a retained
 * online status with a last will, the retained services list, and the command topic (dial, pool).
 * Reconnects with capped, fully jittered exponential backoff reset only after a stable connection; MQTT
 * keepalive detects dead links (mqtt.js closes the connection after 1.5x keepalive without PINGRESP).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import tls from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { ALPN_MQTT, commandEnvelopeSchema, deviceCommandSchema, deviceTopic, PortwayError, type DeviceCommand, type DeviceTelemetry, type ServiceInfo } from '../../../protocol';
import { Backoff } from '../../../shared/backoff';
import type { Logger } from '../../../shared/logger';
import { checkRelayCertAt, type RelayCertCheck } from '../../../shared/relay-cert-at';
import { isIpLiteral } from '../../../shared/relay-trust';
import type { AgentTimers } from '../config';

export interface ControlChannelEvents {
  command: [command: DeviceCommand];
  online: [];
  offline: [];
}

export class ControlChannel extends EventEmitter<ControlChannelEvents> {
  private client: MqttClient | undefined;
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private state: 'idle' | 'connecting' | 'online' | 'waiting' | 'stopped' = 'idle';
  private session = '';
  private services: readonly ServiceInfo[];
  private secureContext: tls.SecureContext;
  reconnects = 0;

  constructor(
    private readonly deps: { log: Logger; now: () => number },
    private readonly options: {
      host: string;
      port: number;
      deviceId: string;
      secureContext: tls.SecureContext;
      services: readonly ServiceInfo[];
      version: string;
      timers: AgentTimers;
      /** While the clock is not known: check the relay certificate at the time floor (clock/time-floor.ts). */
      certCheck?: () => RelayCertCheck | undefined;
    },
  ) {
    super();
    this.services = options.services;
    this.secureContext = options.secureContext;
    this.backoff = new Backoff({ baseMs: options.timers.backoffBaseMs, capMs: options.timers.backoffCapMs, stableAfterMs: options.timers.backoffStableMs });
  }

  get isOnline(): boolean {
    return this.state === 'online';
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.connect();
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    // Say goodbye explicitly (the will only fires on abnormal loss).
    if (client.connected) {
      await client.publishAsync(deviceTopic(this.options.deviceId, 'status'), JSON.stringify({ online: false, session: this.session, at: this.deps.now() }), { qos: 1, retain: true }).catch(() => undefined);
    }
    await new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
  }

  /**
   * A renewed certificate: the next connections use `secureContext`; the current one ends now (its session is
   * replaced at once by a connection with the new certificate, after the usual backoff).
   */
  useSecureContext(secureContext: tls.SecureContext): void {
    this.secureContext = secureContext;
    const client = this.client;
    if (!client || this.state === 'stopped') return;
    this.deps.log.info('agent.control.cert_switch');
    client.end(true);
  }

  /** Replace the services list (a serial port came or went); republished at once when online. */
  updateServices(services: readonly ServiceInfo[]): void {
    this.services = services;
    const client = this.client;
    if (!client || this.state !== 'online') return;
    client.publishAsync(deviceTopic(this.options.deviceId, 'services'), JSON.stringify({ services }), { qos: 1, retain: true }).catch((err: unknown) => {
      this.deps.log.debug({ reason: (err as Error).message }, 'agent.control.services_publish_failed');
    });
  }

  async reply(id: string, result: { ok: true } | { ok: false; code: string; message: string }): Promise<void> {
    await this.client?.publishAsync(deviceTopic(this.options.deviceId, 'reply'), JSON.stringify({ id, ...result }), { qos: 0 });
  }

  /** Retained, QoS 0: the relay keeps the latest sample. Only while online (mqtt.js would queue it otherwise). */
  async publishTelemetry(sample: DeviceTelemetry): Promise<void> {
    const client = this.client;
    if (!client || this.state !== 'online') throw new PortwayError('PW_DEVICE_OFFLINE', 'control channel is offline');
    await client.publishAsync(deviceTopic(this.options.deviceId, 'telemetry'), JSON.stringify(sample), { qos: 0, retain: true });
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    this.session = randomBytes(6).toString('hex');
    const { host, port, deviceId } = this.options;
    const statusTopic = deviceTopic(deviceId, 'status');
    const certCheck = this.options.certCheck?.();
    const client = mqtt.connect({
      ...(certCheck ? { rejectUnauthorized: false } : {}),
      protocol: 'mqtts',
      host,
      port,
      clientId: deviceId,
      protocolVersion: 4,
      clean: true,
      keepalive: this.options.timers.keepaliveS,
      connectTimeout: this.options.timers.connectTimeoutMs,
      reconnectPeriod: 0,
      // mqtt-packet's number cache is 64K small Buffers (about 10 MB RSS) to speed up senders of many
      // packets; an agent sends a handful a minute.
      writeCache: false,
      secureContext: this.secureContext,
      servername: isIpLiteral(host) ? undefined : host,
      ALPNProtocols: [ALPN_MQTT],
      will: { topic: statusTopic, payload: Buffer.from(JSON.stringify({ online: false, session: this.session })), qos: 1, retain: true },
    } as mqtt.IClientOptions);
    this.client = client;
    if (certCheck) this.checkRelayAt(client, certCheck);
    client.on('connect', () => {
      if (this.client !== client) return;
      this.state = 'online';
      this.backoff.connected(this.deps.now());
      this.onConnected(client).catch((err: unknown) => {
        this.deps.log.warn({ err }, 'agent.control.setup_failed');
        client.end(true);
      });
    });
    client.on('message', (topic, payload) => this.onMessage(payload));
    client.on('error', (err) => this.deps.log.warn({ code: (err as NodeJS.ErrnoException).code, reason: err.message }, 'agent.control.error'));
    client.on('close', () => {
      if (this.client !== client) return;
      const wasOnline = this.state === 'online';
      this.backoff.disconnected(this.deps.now());
      client.removeAllListeners('connect');
      client.end(true);
      if (wasOnline) {
        this.deps.log.warn('agent.control.disconnected');
        this.emit('offline');
      }
      this.scheduleReconnect();
    });
  }

  /** The clock is not known: OpenSSL's verdict is not used; the relay's certificate is checked at the floor before anything is read. */
  private checkRelayAt(client: MqttClient, check: RelayCertCheck): void {
    const stream = (client as unknown as { stream?: tls.TLSSocket }).stream;
    if (!stream) {
      client.end(true);
      return;
    }
    stream.once('secureConnect', () => {
      const refused = checkRelayCertAt(stream, this.options.host, check);
      if (!refused) return;
      this.deps.log.warn({ code: refused.code, reason: refused.message }, 'agent.control.relay_refused');
      stream.destroy();
    });
  }

  private async onConnected(client: MqttClient): Promise<void> {
    const { deviceId } = this.options;
    await client.subscribeAsync(deviceTopic(deviceId, 'cmd'), { qos: 1 });
    await client.publishAsync(deviceTopic(deviceId, 'services'), JSON.stringify({ services: this.services }), { qos: 1, retain: true });
    await client.publishAsync(deviceTopic(deviceId, 'status'), JSON.stringify({ online: true, session: this.session, version: this.options.version, at: this.deps.now() }), { qos: 1, retain: true });
    this.deps.log.info({ deviceId, reconnects: this.reconnects }, 'agent.control.online');
    this.emit('online');
  }

  private scheduleReconnect(): void {
    if (this.state === 'stopped') return;
    this.state = 'waiting';
    const delay = this.backoff.next();
    this.deps.log.info({ delayMs: delay, attempt: this.backoff.attempts }, 'agent.reconnect.scheduled');
    this.reconnectTimer = setTimeout(() => {
      this.reconnects++;
      this.connect();
    }, delay);
  }

  private onMessage(payload: Buffer): void {
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch (err) {
      this.deps.log.debug({ err }, 'agent.control.bad_json');
      return;
    }
    const parsed = deviceCommandSchema.safeParse(body);
    if (!parsed.success) {
      const envelope = commandEnvelopeSchema.safeParse(body);
      if (envelope.success) this.reply(envelope.data.id, new PortwayError('PW_UNKNOWN_MESSAGE', `unknown command ${envelope.data.type}`).toWire()).catch(() => undefined);
      return;
    }
    // expiresAt is not enforced here: a Pi without an RTC may boot with a clock far off, and the relay
    // enforces the lifetime of what a command hands out (stream tokens expire at the relay).
    this.emit('command', parsed.data);
  }
}
