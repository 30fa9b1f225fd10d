/**
 * Device revocation on a running relay: `revoke()` (the HTTP API: `portway device remove`) writes the store and
 * ends the device's live sessions at once; a poll of the store (every `pollMs`, default 1 s) finds revocations
 * written elsewhere (`portway relay device revoke` with the relay running, another relay sharing PostgreSQL) and
 * ends their sessions too. Ending = the device's MQTT connections (EmbeddedBroker.disconnectDevice) and its
 * pooled data sockets, waiting dials, primed client sockets and spliced streams (DataPlane.dropDevice). New ones
 * are refused where they authenticate (access.ts checkDeviceCert: PW_DEVICE_REVOKED). The same poll finds user
 * certificates revoked since (a token revoked through any relay, or in the store) and ends the streams their
 * clients hold here (DataPlane.dropClientStreams); new ones are refused at open (access.ts checkCertToken).
 *
 * Revocation times are the store's clock; the poll reads from (last poll start − POLL_OVERLAP_MS) so a row
 * written while a poll ran is not missed, and ignores devices it already enforced (bounded set).
 */
import { PortwayError } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import type { Device, Store } from '../store';

const POLL_OVERLAP_MS = 10_000;
const MAX_REMEMBERED = 10_000;

export interface RevocationTargets {
  disconnectDevice(deviceId: string): number;
  dropDevice(deviceId: string): number;
  /** Streams and primed sockets of clients that authenticated with one of these user certificates (DataPlane.dropClientStreams). */
  dropClientStreams(filter: { readonly certFingerprints: ReadonlySet<string> }): number;
}

export interface DeviceRevocationsOptions {
  readonly pollMs: number;
}

export class DeviceRevocations {
  private timer: NodeJS.Timeout | undefined;
  private since: number;
  private readonly enforced = new Set<string>();
  private state: 'idle' | 'running' | 'stopped' = 'idle';
  private polling: Promise<void> | undefined;

  constructor(
    private readonly deps: { log: Logger; store: Store; now: () => number; targets: RevocationTargets },
    private readonly options: DeviceRevocationsOptions,
  ) {
    this.since = deps.now();
  }

  /** Starts polling; revocations from before the start need no enforcing (their devices cannot connect). */
  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.since = this.deps.now() - POLL_OVERLAP_MS;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    clearTimeout(this.timer);
    await this.polling;
  }

  /**
   * Revoke a device: store, audit, then end its sessions. PW_UNKNOWN_DEVICE when there is no such device,
   * PW_DEVICE_REVOKED when it was already revoked (the audit entry says so too).
   */
  async revoke(device: Device, audit: { actor: string; source: string }): Promise<void> {
    const outcome = device.revokedAt === undefined ? 'ok' : 'PW_DEVICE_REVOKED';
    if (outcome === 'ok' && !(await this.deps.store.revokeDevice(device.id))) throw new PortwayError('PW_UNKNOWN_DEVICE');
    await this.deps.store.appendAudit({ actor: audit.actor, action: 'device.revoke', target: device.id, source: audit.source, outcome });
    if (outcome !== 'ok') throw new PortwayError('PW_DEVICE_REVOKED', 'this device was already removed');
    this.enforce(device.id, 'api');
  }

  private enforce(deviceId: string, via: 'api' | 'poll'): void {
    if (this.enforced.size >= MAX_REMEMBERED) this.enforced.delete(this.enforced.values().next().value as string);
    this.enforced.add(deviceId);
    const sessions = this.deps.targets.disconnectDevice(deviceId);
    const streams = this.deps.targets.dropDevice(deviceId);
    this.deps.log.info({ deviceId, via, mqttSessions: sessions, streams }, 'relay.device.revoked');
  }

  private schedule(): void {
    if (this.state !== 'running') return;
    this.timer = setTimeout(() => {
      this.polling = this.poll().finally(() => {
        this.polling = undefined;
        this.schedule();
      });
    }, this.options.pollMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    const started = this.deps.now();
    try {
      const revoked = await this.deps.store.listRevokedDevices(this.since);
      for (const device of revoked) if (!this.enforced.has(device.id)) this.enforce(device.id, 'poll');
      // User certificates revoked elsewhere (a token revoked through another relay): their live streams end here too.
      const certs = await this.deps.store.listRevokedUserCerts(this.since);
      if (certs.length > 0) {
        const streams = this.deps.targets.dropClientStreams({ certFingerprints: new Set(certs.map((c) => c.fingerprint)) });
        if (streams > 0) this.deps.log.info({ certificates: certs.length, streams }, 'relay.user_certs.revoked');
      }
      this.since = started - POLL_OVERLAP_MS;
    } catch (err) {
      if (err instanceof PortwayError && err.code === 'PW_SHUTTING_DOWN') return;
      this.deps.log.warn({ err }, 'relay.revocations.poll_failed');
    }
  }
}
