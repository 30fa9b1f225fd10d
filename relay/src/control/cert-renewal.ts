/**
 * Device certificate renewal, driven by the relay (docs/security.md, certificate lifetime). When a device's MQTT
 * session is accepted, the relay notes the certificate it presented; once less than a third of that
 * certificate's validity is left (at once, if already so), it issues a new certificate for the same device
 * and the same key (taken from the presented certificate: no CSR, the key never changes), records its
 * fingerprint (store.updateDeviceCert), audits `device.cert.renew`, and sends it on the device's command topic
 * (`cert` command, protocol/messages.ts). The agent checks it, writes it and reconnects with it.
 *
 * Why the relay decides: its clock is right (a device without a real-time clock may not know the date), it
 * knows the key, and nothing new has to be accepted from the device. Devices are authenticated by key
 * (access.ts checkDeviceCert), so the previous certificate stays usable until it expires: no grace period to
 * manage, and a lost reply costs nothing (the next session renews again).
 */
import { randomBytes, type X509Certificate } from 'node:crypto';
import type tls from 'node:tls';
import type { MqttClient } from 'mqtt';
import { deviceTopic, type CertCommand } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import { certFingerprint, spkiFingerprint } from '../../../shared/x509';
import { NOT_BEFORE_BACKDATE_MS, type CertificateAuthority } from '../pki';
import type { Store } from '../store';

/** setTimeout's longest delay; later renewals are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const COMMAND_TTL_MS = 60_000;
/** A renewal due at connect waits this long, so the agent has subscribed to its command topic. */
const RENEW_SETTLE_MS = 2_000;

export interface CertRenewalOptions {
  readonly deviceCertValidityMs: number;
}

interface Tracked {
  readonly socket: tls.TLSSocket;
  timer: NodeJS.Timeout | undefined;
}

export class CertRenewal {
  private readonly tracked = new Map<string, Tracked>();
  private state: 'idle' | 'running' | 'stopped' = 'idle';

  constructor(
    private readonly deps: { log: Logger; store: Store; ca: CertificateAuthority; mqtt: MqttClient; now?: () => number },
    private readonly options: CertRenewalOptions,
  ) {}

  start(): Promise<void> {
    this.state = 'running';
    return Promise.resolve();
  }

  stop(): void {
    this.state = 'stopped';
    for (const entry of this.tracked.values()) clearTimeout(entry.timer);
    this.tracked.clear();
  }

  /** A device's MQTT session was accepted with `cert` on `socket`: renew when a third of its validity is left. */
  track(deviceId: string, socket: tls.TLSSocket, cert: X509Certificate): void {
    if (this.state !== 'running') return;
    const previous = this.tracked.get(deviceId);
    if (previous) clearTimeout(previous.timer);
    const entry: Tracked = { socket, timer: undefined };
    this.tracked.set(deviceId, entry);
    socket.once('close', () => {
      clearTimeout(entry.timer);
      if (this.tracked.get(deviceId) === entry) this.tracked.delete(deviceId);
    });
    // Issued certificates start NOT_BEFORE_BACKDATE_MS before they were issued; the lifetime counts from issue.
    const issuedAt = Date.parse(cert.validFrom) + NOT_BEFORE_BACKDATE_MS;
    const notAfter = Date.parse(cert.validTo);
    const renewAt = Math.max(notAfter - (notAfter - issuedAt) / 3, this.now() + RENEW_SETTLE_MS);
    this.arm(deviceId, entry, renewAt, cert);
  }

  private arm(deviceId: string, entry: Tracked, renewAt: number, cert: X509Certificate): void {
    const delay = Math.max(0, renewAt - this.now());
    entry.timer = setTimeout(() => {
      if (this.tracked.get(deviceId) !== entry || this.state !== 'running') return;
      if (renewAt > this.now()) return this.arm(deviceId, entry, renewAt, cert);
      this.renew(deviceId, cert).catch((err: unknown) => this.deps.log.warn({ err, deviceId }, 'relay.cert.renew_failed'));
    }, Math.min(delay, MAX_TIMER_MS));
    entry.timer.unref();
  }

  private async renew(deviceId: string, presented: X509Certificate): Promise<void> {
    const device = await this.deps.store.getDevice(deviceId);
    if (!device || device.revokedAt !== undefined) return;
    const spkiDer = presented.publicKey.export({ type: 'spki', format: 'der' });
    const keyFingerprint = spkiFingerprint(spkiDer);
    if (keyFingerprint !== device.keyFingerprint) return; // checkDeviceCert refuses such a session anyway
    const certificate = this.deps.ca.issueDeviceCert({ deviceId, name: device.name, publicKeySpkiDer: spkiDer, validityMs: this.options.deviceCertValidityMs });
    const fingerprint = certFingerprint(certificate);
    await this.deps.store.updateDeviceCert(deviceId, { certFingerprint: fingerprint, keyFingerprint });
    await this.deps.store.appendAudit({ actor: 'relay', action: 'device.cert.renew', target: deviceId, outcome: 'ok' });
    const command: CertCommand = { type: 'cert', id: randomBytes(8).toString('hex'), expiresAt: this.now() + COMMAND_TTL_MS, certificate };
    await this.deps.mqtt.publishAsync(deviceTopic(deviceId, 'cmd'), JSON.stringify(command), { qos: 1 });
    this.deps.log.info({ deviceId, certFingerprint: fingerprint, previousNotAfter: presented.validTo }, 'relay.cert.renewed');
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }
}
