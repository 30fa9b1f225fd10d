/**
 * Delivering owner grant sets to devices (docs/security.md "Grants"): the latest signed set the store holds for a
 * device goes to it as a `grants` command (protocol/messages.ts) when the owner stores a new one (HTTP API) and
 * each time the device comes online (DeviceRegistry 'online': a lost command costs nothing, the next session
 * sends it again; with several relays each sends it and the agent treats a set it holds as a no-op).
 *
 * The relay only carries the set: the agent verifies the owner's signature and refuses an older sequence number,
 * so what this module sends cannot widen anyone's access. Sets the store holds are shape-checked before sending
 * (a damaged row is logged, not sent).
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { deviceTopic, signedGrantSetSchema, type GrantsCommand } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import type { Store } from '../store';
import type { DeviceRegistry } from './device-registry';

export interface GrantDeliveryOptions {
  readonly commandTtlMs: number;
}

export class GrantDelivery {
  private state: 'idle' | 'running' | 'stopped' = 'idle';
  private readonly onOnline = (deviceId: string): void => {
    this.deliver(deviceId).catch((err: unknown) => this.deps.log.warn({ err, deviceId }, 'relay.grants.deliver_failed'));
  };

  constructor(
    private readonly deps: { log: Logger; store: Store; mqtt: MqttClient; registry: DeviceRegistry; now: () => number },
    private readonly options: GrantDeliveryOptions,
  ) {}

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.deps.registry.on('online', this.onOnline);
  }

  stop(): void {
    this.state = 'stopped';
    this.deps.registry.off('online', this.onOnline);
  }

  /** Send the stored set to the device if it is online; resolves whether a command was sent. */
  async deliver(deviceId: string): Promise<boolean> {
    if (this.state !== 'running' || !this.deps.registry.isOnline(deviceId)) return false;
    const stored = await this.deps.store.getDeviceGrants(deviceId);
    if (!stored) return false;
    let grants: GrantsCommand['grants'];
    try {
      grants = signedGrantSetSchema.parse(JSON.parse(stored.grants));
    } catch (err) {
      this.deps.log.warn({ deviceId, seq: stored.seq, code: 'PW_GRANT_INVALID', reason: (err as Error).message.slice(0, 200) }, 'relay.grants.stored_damaged');
      return false;
    }
    const command: GrantsCommand = { type: 'grants', id: randomBytes(8).toString('hex'), expiresAt: this.deps.now() + this.options.commandTtlMs, grants };
    await this.deps.mqtt.publishAsync(deviceTopic(deviceId, 'cmd'), JSON.stringify(command), { qos: 1 });
    this.deps.log.info({ deviceId, seq: stored.seq }, 'relay.grants.sent');
    return true;
  }
}
