/**
 * The relay: one TLS port (data plane, embedded MQTT broker, HTTP API routed by ALPN), the store, the CA,
 * and the control client that follows device presence over MQTT. Built with `new Relay(deps, options)`;
 * `start()` listens, `stop()` undoes everything in reverse order.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/logger';
import { HttpApi } from './api/http-api';
import type { ClaimMisbehaviour } from './claims/claim-misbehaviour';
import type { DataMisbehaviour } from './data/data-misbehaviour';
import { ClaimService } from './claims/claim-service';
import { EmbeddedBroker, ExternalBroker } from './broker';
import type { RelayOptions } from './config';
import { DeviceRegistry } from './control/device-registry';
import { DeviceRevocations } from './control/device-revocations';
import { CertRenewal } from './control/cert-renewal';
import { GrantDelivery } from './control/grant-delivery';
import { checkDeviceCert } from './access';
import { PortwayError } from '../../protocol';
import { DataPlane, type DataPlaneStats } from './data/data-plane';
import { loadCa, loadServerCert, relayFiles } from './data-dir';
import { RelayMetrics } from './metrics';
import type { CertificateAuthority } from './pki';
import { describeDb, openStore, type Store } from './store';
import { dropConnection, TlsFront } from './tls-front';
import { DeviceAdmission } from './device-admission';
import { tlsCipherOptions } from '../../shared/tls-profile';

/** How often the device admission rate follows the store's fleet size (enrollments, claims, revocations). */
const FLEET_REFRESH_MS = 10_000;

export type RelayStats = Omit<DataPlaneStats, 'rejects'> & {
  /** Refusals by code: the TLS front's (before routing) and the data plane's. */
  rejects: Record<string, number>;
  connections: number;
  mqttClients: number;
  deviceSessionsTotal: number;
};

export interface RelayDeps {
  readonly log: Logger;
  readonly now?: () => number;
  /** TEST ONLY (claim-misbehaviour.ts): a relay that lies during claims. */
  readonly misbehaviour?: ClaimMisbehaviour;
  /** TEST ONLY (data-misbehaviour.ts): a relay that replays or mis-splices stream bytes. */
  readonly dataMisbehaviour?: DataMisbehaviour;
}

export class Relay {
  private state: 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' = 'idle';
  private readonly stack: (() => Promise<void> | void)[] = [];
  private front: TlsFront | undefined;
  private dataPlane: DataPlane | undefined;
  private broker: EmbeddedBroker | ExternalBroker | undefined;
  private caCert: CertificateAuthority | undefined;
  private address: { host: string; port: number } | undefined;
  private metricsAt: { host: string; port: number } | undefined;
  /** Connections the TLS front refused before routing (PW_NOT_TLS, PW_RELAY_BUSY, handshake failures), by code. */
  private readonly frontRejects: Record<string, number> = {};
  /** Device MQTT sessions accepted since start: with a steady fleet, its growth is the reconnects. */
  private deviceSessionsTotal = 0;

  constructor(
    private readonly deps: RelayDeps,
    private readonly options: Readonly<RelayOptions>,
  ) {}

  async start(): Promise<{ host: string; port: number }> {
    if (this.state !== 'idle') throw new Error(`relay cannot start in state ${this.state}`);
    this.state = 'starting';
    const log = this.deps.log;
    const now = this.deps.now ?? Date.now;
    const { timers, limits } = this.options;
    try {
      const ca = await loadCa(this.options.dataDir);
      this.caCert = ca;
      const server = await loadServerCert(this.options.dataDir, this.options.certFile && this.options.keyFile ? { certFile: this.options.certFile, keyFile: this.options.keyFile } : undefined);
      const db = this.options.db ?? relayFiles(this.options.dataDir).db;
      const store: Store = await openStore(db, { now });
      this.stack.push(() => store.close());

      const broker = await this.startBroker(log);
      const mqtt = new MqttClient(() => broker.connectInternalClient(), {
        clientId: `portway-relay-${randomBytes(6).toString('hex')}`,
        protocolVersion: 4,
        keepalive: 60,
        reconnectPeriod: 500,
        clean: true,
        ...(broker instanceof ExternalBroker ? broker.credentials : {}),
      });
      mqtt.on('error', (err) => log.warn({ err }, 'relay.control.mqtt_error'));
      this.stack.push(() => new Promise<void>((resolve) => mqtt.end(true, {}, () => resolve())));
      await new Promise<void>((resolve, reject) => {
        mqtt.once('connect', () => resolve());
        mqtt.once('error', (err) => reject(this.options.broker === undefined ? err : new PortwayError('PW_BROKER_UNREACHABLE', `cannot connect to the MQTT broker ${this.options.broker}: ${err.message}`, { cause: err })));
      });

      const registry = new DeviceRegistry({ log: log.child({ component: 'registry' }), mqtt, now }, { poolSize: limits.poolSize, poolTtlMs: timers.poolTtlMs, commandTtlMs: timers.dialTimeoutMs });
      await registry.start();
      this.stack.push(() => registry.stop());

      const dataPlane = new DataPlane({ log: log.child({ component: 'data' }), store, registry, misbehaviour: this.deps.dataMisbehaviour }, { ...timers, ...limits });
      dataPlane.start();
      this.dataPlane = dataPlane;
      this.stack.push(() => dataPlane.stop());

      const revocations = new DeviceRevocations(
        { log: log.child({ component: 'revocations' }), store, now, targets: { disconnectDevice: (id) => broker.disconnectDevice(id), dropDevice: (id) => dataPlane.dropDevice(id), dropClientStreams: (filter) => dataPlane.dropClientStreams(filter) } },
        { pollMs: timers.revocationPollMs },
      );
      revocations.start();
      this.stack.push(() => revocations.stop());

      const renewal = new CertRenewal({ log: log.child({ component: 'renewal' }), store, ca, mqtt }, { deviceCertValidityMs: this.options.deviceCertValidityMs });
      await renewal.start();
      this.stack.push(() => renewal.stop());

      const grants = new GrantDelivery({ log: log.child({ component: 'grants' }), store, mqtt, registry, now }, { commandTtlMs: timers.dialTimeoutMs });
      grants.start();
      this.stack.push(() => grants.stop());

      const claims = new ClaimService(
        { log: log.child({ component: 'claims' }), store, ca, now, misbehaviour: this.deps.misbehaviour },
        { ...this.options.claims, deviceCertValidityMs: this.options.deviceCertValidityMs },
      );
      this.stack.push(() => claims.stop());
      const api = new HttpApi(
        { log: log.child({ component: 'api' }), store, ca, registry, claims, revocations, grants, streams: dataPlane },
        { maxBodyBytes: limits.maxHttpBodyBytes, requestTimeoutMs: timers.httpRequestTimeoutMs, deviceCertValidityMs: this.options.deviceCertValidityMs, userCertValidityMs: this.options.userCertValidityMs },
      );
      this.stack.push(() => api.stop());

      const admission = await this.startAdmission(store, log);

      // sessionIdContext: with client certificates requested, OpenSSL resumes sessions only inside a named context.
      const secureContext = tls.createSecureContext({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, sessionIdContext: 'portway-relay', ...tlsCipherOptions() });
      const front = new TlsFront(
        {
          log: log.child({ component: 'front' }),
          secureContext,
          ca: new X509Certificate(ca.certPem),
          admission,
          onReject: (code) => {
            this.frontRejects[code] = (this.frontRejects[code] ?? 0) + 1;
          },
          routes: {
            data: (conn) => dataPlane.handleConnection(conn),
            http: (conn) => api.handleConnection(conn),
            mqtt: (conn) => {
              if (conn.peer.role !== 'device' || !conn.peer.id) {
                log.info({ remote: conn.remote, code: conn.peer.role === 'none' ? (conn.peer.certCode ?? 'PW_CLIENT_CERT_REQUIRED') : 'PW_WRONG_ROLE', reason: conn.peer.certError }, 'relay.connection.rejected');
                dropConnection(conn);
                return;
              }
              const deviceId = conn.peer.id;
              store.getDevice(deviceId).then(
                (device) => {
                  try {
                    checkDeviceCert(device, conn.peer);
                  } catch (err) {
                    log.info({ remote: conn.remote, deviceId, code: (err as PortwayError).code, reason: (err as Error).message }, 'relay.connection.rejected');
                    dropConnection(conn);
                    return;
                  }
                  broker.handleConnection(conn.tls, { kind: 'device', deviceId });
                  const presented = conn.tls.getPeerX509Certificate();
                  if (presented) renewal.track(deviceId, conn.tls, presented);
                },
                (err: unknown) => {
                  log.error({ err }, 'relay.mqtt.lookup_failed');
                  dropConnection(conn);
                },
              );
            },
          },
        },
        { tlsHandshakeTimeoutMs: timers.tlsHandshakeTimeoutMs, maxConnections: limits.maxConnections },
      );
      this.front = front;
      this.stack.push(() => front.stop());
      this.address = await front.listen(this.options.listen.host, this.options.listen.port);
      let metricsAddress: { host: string; port: number } | undefined;
      if (this.options.metricsListen) {
        const metrics = new RelayMetrics(this);
        this.stack.push(() => metrics.stop());
        metricsAddress = await metrics.listen(this.options.metricsListen.host, this.options.metricsListen.port);
        this.metricsAt = metricsAddress;
      }
      this.state = 'running';
      log.info({ address: this.address, metrics: metricsAddress, caFingerprint: ca.fingerprint, db: describeDb(db), deviceSessionsPerSecond: admission.ratePerSecond }, 'relay.started');
      return this.address;
    } catch (err) {
      await this.unwind();
      this.state = 'stopped';
      throw err;
    }
  }

  /** Pacing of device sessions (device-admission.ts), sized from the store's fleet now and every 10 s. */
  private async startAdmission(store: Store, log: Logger): Promise<DeviceAdmission> {
    const { limits, timers } = this.options;
    const admission = new DeviceAdmission(
      { spreadS: limits.deviceReconnectSpreadS, minPerSecond: limits.minDeviceSessionsPerSecond, maxPerSecond: limits.maxDeviceSessionsPerSecond, maxWaitMs: timers.deviceAdmissionWaitMs },
    );
    admission.setFleetSize(await store.countActiveDevices());
    const refresh = setInterval(() => {
      store.countActiveDevices().then(
        (devices) => admission.setFleetSize(devices),
        (err: unknown) => log.warn({ err }, 'relay.admission.fleet_count_failed'),
      );
    }, FLEET_REFRESH_MS);
    refresh.unref();
    this.stack.push(() => clearInterval(refresh));
    return admission;
  }

  /** The embedded broker, or the relay's gateway to the external one (`broker` option). */
  private async startBroker(log: Logger): Promise<EmbeddedBroker | ExternalBroker> {
    const connectTimeoutMs = this.options.timers.mqttConnectTimeoutMs;
    const { broker: url, brokerCaFile, brokerPassword } = this.options;
    const broker =
      url === undefined
        ? new EmbeddedBroker({ log }, { connectTimeoutMs, keepaliveMinS: 1 })
        : new ExternalBroker({ log }, { connectTimeoutMs, keepaliveMinS: 1, url, ...(brokerPassword ? { password: brokerPassword } : {}), ...(brokerCaFile ? { caPem: await readBrokerCa(brokerCaFile) } : {}) });
    await broker.start();
    broker.on('broker.client.connected', (event) => {
      if (event.deviceId !== undefined) this.deviceSessionsTotal++;
    });
    this.broker = broker;
    this.stack.push(() => broker.stop());
    return broker;
  }

  get metricsAddress(): { host: string; port: number } | undefined {
    return this.metricsAt;
  }

  get ca(): CertificateAuthority | undefined {
    return this.caCert;
  }

  stats(): RelayStats {
    const data = this.dataPlane?.stats() ?? { streamsOpen: 0, streamsTotal: 0, primed: 0, pooled: 0, pendingDials: 0, bufferedBytes: 0, bytesToDevice: 0, bytesToClient: 0, rejects: {} };
    const rejects: Record<string, number> = { ...this.frontRejects };
    for (const [code, n] of Object.entries(data.rejects)) rejects[code] = (rejects[code] ?? 0) + (n ?? 0);
    return { ...data, rejects, connections: this.front?.connectionCount ?? 0, mqttClients: this.broker?.clientCount ?? 0, deviceSessionsTotal: this.deviceSessionsTotal };
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    await this.unwind();
    this.state = 'stopped';
    this.deps.log.info('relay.stopped');
  }

  private async unwind(): Promise<void> {
    while (this.stack.length > 0) {
      const step = this.stack.pop() as () => Promise<void> | void;
      try {
        await step();
      } catch (err) {
        this.deps.log.warn({ err }, 'relay.stop.step_failed');
      }
    }
  }
}

async function readBrokerCa(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `cannot read brokerCaFile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}
