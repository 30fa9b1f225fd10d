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

/**
 * One tracked session: its socket (the presented certificate is read from it again when the renewal is due,
 * so no certificate object is kept per device) and when its certificate is due for renewal.
 */
interface Tracked {
  readonly socket: tls.TLSSocket;
  readonly renewAt: number;
}

export class CertRenewal {
  private readonly tracked = new Map<string, Tracked>();
  /** One timer for the earliest renewal due (a timer per device costs a timer list per distinct delay). */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
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
    clearTimeout(this.timer);
    this.timer = undefined;
    this.tracked.clear();
  }

  /** A device's MQTT session was accepted with `cert` on `socket`: renew when a third of its validity is left. */
  track(deviceId: string, socket: tls.TLSSocket, cert: X509Certificate): void {
    if (this.state !== 'running') return;
    // Issued certificates start NOT_BEFORE_BACKDATE_MS before they were issued; the lifetime counts from issue.
    const issuedAt = Date.parse(cert.validFrom) + NOT_BEFORE_BACKDATE_MS;
    const notAfter = Date.parse(cert.validTo);
    const renewAt = Math.max(notAfter - (notAfter - issuedAt) / 3, this.now() + RENEW_SETTLE_MS);
    const entry: Tracked = { socket, renewAt };
    this.tracked.set(deviceId, entry);
    socket.once('close', () => {
      if (this.tracked.get(deviceId) === entry) this.tracked.delete(deviceId);
    });
    if (renewAt < this.timerAt) this.arm(renewAt);
  }

  private arm(at: number): void {
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.renewDue(), Math.min(Math.max(0, at - this.now()), MAX_TIMER_MS));
    this.timer.unref();
  }

  /** Renew every session that is due, then arm the timer for the next one. */
  private renewDue(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    if (this.state !== 'running') return;
    const now = this.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [deviceId, entry] of this.tracked) {
      if (entry.renewAt > now) {
        next = Math.min(next, entry.renewAt);
        continue;
      }
      // One renewal per session: the agent reconnects with the new certificate, which is tracked anew.
      this.tracked.delete(deviceId);
      const presented = entry.socket.getPeerX509Certificate();
      if (!presented) continue;
      this.renew(deviceId, presented).catch((err: unknown) => this.deps.log.warn({ err, deviceId }, 'relay.cert.renew_failed'));
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next);
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
