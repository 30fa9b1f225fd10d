/**
 * What the relay knows about connected devices, learnt over MQTT: online state (retained status with a
 * last will) and the services each device exposes; and the commands the relay sends to a device (dial a
 * data socket for a stream, keep a pool of data sockets open).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import {
  allDevicesFilter,
  deviceServicesSchema,
  deviceStatusSchema,
  deviceTopic,
  parseDeviceTopic,
  type DeviceCommand,
  type ServiceInfo,
} from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import { TelemetryBook, type TelemetryEntry } from './telemetry-book';

/** Devices whose latest telemetry the relay keeps (a sample is at most MAX_TELEMETRY_BYTES). */
const MAX_TELEMETRY_DEVICES = 100_000;

interface DeviceState {
  online: boolean;
  session?: string;
  version?: string;
  services: ServiceInfo[];
  lastSeenAt?: number;
  poolRequestedAt?: number;
}

export interface DeviceRegistryOptions {
  readonly poolSize: number;
  readonly poolTtlMs: number;
  readonly commandTtlMs: number;
}

export interface DeviceRegistryEvents {
  online: [deviceId: string];
  offline: [deviceId: string];
}

export class DeviceRegistry extends EventEmitter<DeviceRegistryEvents> {
  private readonly devices = new Map<string, DeviceState>();
  private readonly onMessage = (topic: string, payload: Buffer): void => this.handleMessage(topic, payload);
  readonly telemetry: TelemetryBook;

  constructor(
    private readonly deps: { log: Logger; mqtt: MqttClient; now: () => number },
    private readonly options: DeviceRegistryOptions,
  ) {
    super();
    this.telemetry = new TelemetryBook({ log: deps.log, now: deps.now }, { maxDevices: MAX_TELEMETRY_DEVICES });
  }

  async start(): Promise<void> {
    this.deps.mqtt.on('message', this.onMessage);
    await this.deps.mqtt.subscribeAsync([allDevicesFilter('status'), allDevicesFilter('services'), allDevicesFilter('reply')], { qos: 1 });
    await this.deps.mqtt.subscribeAsync(allDevicesFilter('telemetry'), { qos: 0 });
  }

  stop(): void {
    this.deps.mqtt.off('message', this.onMessage);
  }

  isOnline(deviceId: string): boolean {
    return this.devices.get(deviceId)?.online === true;
  }

  services(deviceId: string): readonly ServiceInfo[] {
    return this.devices.get(deviceId)?.services ?? [];
  }

  info(deviceId: string): { online: boolean; services: readonly ServiceInfo[]; version?: string; lastSeenAt?: number; telemetry?: TelemetryEntry } {
    const d = this.devices.get(deviceId);
    return { online: d?.online === true, services: d?.services ?? [], version: d?.version, lastSeenAt: d?.lastSeenAt, telemetry: this.telemetry.get(deviceId) };
  }

  /** Ask the device to open one data socket presenting `token`. */
  async requestDial(deviceId: string, token: string): Promise<void> {
    await this.sendCommand(deviceId, { type: 'dial', token, ...this.envelope() });
  }

  /** Ask the device to keep its pool of data sockets warm; sent at most once per half TTL. */
  warmPool(deviceId: string): void {
    const state = this.devices.get(deviceId);
    if (!state?.online || this.options.poolSize === 0) return;
    const now = this.deps.now();
    if (state.poolRequestedAt !== undefined && now - state.poolRequestedAt < this.options.poolTtlMs / 2) return;
    state.poolRequestedAt = now;
    this.sendCommand(deviceId, { type: 'pool', size: this.options.poolSize, ttlMs: this.options.poolTtlMs, ...this.envelope() }).catch((err: unknown) => {
      this.deps.log.warn({ err, deviceId }, 'relay.pool.request_failed');
    });
  }

  private envelope(): { id: string; expiresAt: number } {
    return { id: randomBytes(8).toString('hex'), expiresAt: this.deps.now() + this.options.commandTtlMs };
  }

  private async sendCommand(deviceId: string, command: DeviceCommand): Promise<void> {
    await this.deps.mqtt.publishAsync(deviceTopic(deviceId, 'cmd'), JSON.stringify(command), { qos: 1 });
  }

  private state(deviceId: string): DeviceState {
    let state = this.devices.get(deviceId);
    if (!state) {
      state = { online: false, services: [] };
      this.devices.set(deviceId, state);
    }
    return state;
  }

  private handleMessage(topic: string, payload: Buffer): void {
    const parsed = parseDeviceTopic(topic);
    if (!parsed) return;
    if (parsed.kind === 'telemetry') {
      // Checked (size, JSON, schema) by the book before it is kept; a live sample also means the device was seen.
      if (this.telemetry.accept(parsed.deviceId, payload) && this.devices.get(parsed.deviceId)?.online) this.state(parsed.deviceId).lastSeenAt = this.deps.now();
      return;
    }
    let body: unknown;
    try {
      body = payload.length === 0 ? undefined : JSON.parse(payload.toString('utf8'));
    } catch (err) {
      this.deps.log.debug({ topic, err }, 'relay.control.bad_json');
      return;
    }
    if (parsed.kind === 'status') {
      const status = deviceStatusSchema.safeParse(body);
      if (!status.success) return;
      const state = this.state(parsed.deviceId);
      const wasOnline = state.online;
      if (status.data.online) {
        state.online = true;
        state.session = status.data.session;
        state.version = status.data.version;
        state.lastSeenAt = this.deps.now();
        state.poolRequestedAt = undefined;
        if (!wasOnline) {
          this.deps.log.info({ deviceId: parsed.deviceId }, 'relay.device.online');
          this.emit('online', parsed.deviceId);
        }
      } else {
        // A will from a replaced session must not take down the session that replaced it.
        if (status.data.session !== undefined && state.session !== undefined && status.data.session !== state.session) return;
        state.online = false;
        state.lastSeenAt = this.deps.now();
        if (wasOnline) {
          this.deps.log.info({ deviceId: parsed.deviceId }, 'relay.device.offline');
          this.emit('offline', parsed.deviceId);
        }
      }
    } else if (parsed.kind === 'services') {
      const services = deviceServicesSchema.safeParse(body);
      if (services.success) this.state(parsed.deviceId).services = services.data.services;
    }
  }
}
