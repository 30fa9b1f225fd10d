/**
 * The device agent: identity (enroll on first start), the MQTT control channel, data sockets (a pool kept
 * warm while the relay asks for it, and sockets dialed on demand for one stream each), and streams.
 */
import type { AgentStats } from './agent-metrics';
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { PortwayError, type CertCommand, type DeviceCommand, type GrantsCommand, type ServiceInfo } from '../../protocol';
import type { Logger } from '../../shared/logger';
import { parseHostPort } from '../../shared/relay-trust';
import { ConcurrencyGate } from '../../shared/concurrency-gate';
import { TlsSessionCache } from '../../shared/tls-session-cache';
import type { AgentConfig, ServiceConfig } from './config';
import { DeviceAccess } from './claim/device-access';
import { GrantBook } from './claim/grant-book';
import { ControlChannel } from './control/control-channel';
import { installRenewedCert } from './control/renewed-cert';
import { TimeFloor } from './clock/time-floor';
import { awaitStreamOpen, connectDataSocket, type DataSocket, type DataSocketTarget } from './data-socket';
import { loadOrCreateIdentity, type DeviceIdentity } from './identity';
import { SerialServices } from './streams/serial-services';
import { runStream } from './streams/tcp-stream';
import { UdpSessions } from './streams/udp-sessions';
import { TelemetryCollector, THERMAL_DIR } from './telemetry/telemetry-collector';
import { TelemetryReporter } from './telemetry/telemetry-reporter';
import { THROTTLED_SYSFS_PATH } from './telemetry/throttle-state';
import { tlsCipherOptions } from '../../shared/tls-profile';

export const AGENT_VERSION = process.env.PORTWAY_VERSION ?? '0.1.0';
/** After a pooled socket failed to open, wait at least this long before refilling. */
const POOL_RETRY_MS = 1_000;
/** Data-socket TLS handshakes in flight at once; more wait their turn. */
const DATA_SOCKET_HANDSHAKES = 16;

export class Agent {
  private state: 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' = 'idle';
  private control: ControlChannel | undefined;
  private identity: DeviceIdentity | undefined;
  private target: DataSocketTarget | undefined;
  private innerContext: tls.SecureContext | undefined;
  private caX509: X509Certificate | undefined;
  private readonly abort = new AbortController();
  private readonly services: ReadonlyMap<string, ServiceConfig>;
  /** Data sockets by their TCP connection (which outlives the outer TLS layer after the handoff). */
  private readonly pooled = new Set<net.Socket>();
  private readonly streams = new Set<net.Socket>();
  /** Bytes of ended streams' data sockets (live ones are added in stats()), and streams refused by code. */
  private readonly endedBytes = { toRelay: 0, fromRelay: 0 };
  private readonly refusals: Record<string, number> = {};
  private readonly udpSessions: UdpSessions;
  private readonly serial: SerialServices;
  private poolSize = 0;
  private poolUntil = 0;
  private poolOpening = 0;
  private poolRetryTimer: NodeJS.Timeout | undefined;
  private poolExpiryTimer: NodeJS.Timeout | undefined;
  private telemetry: TelemetryReporter | undefined;
  private timeFloor: TimeFloor | undefined;
  /** A claimed device's owner keys, owner grants and the streams they admitted; undefined for a device enrolled with a fleet key. */
  private access: DeviceAccess | undefined;

  constructor(
    /** `vcgencmd`: its path when it is on PATH (main.ts looks), for the Pi's throttling state. */
    private readonly deps: { log: Logger; now?: () => number; vcgencmd?: string },
    private readonly config: Readonly<AgentConfig>,
  ) {
    this.services = new Map(config.services.map((s) => [s.name, s]));
    this.udpSessions = new UdpSessions(config.maxUdpSessions);
    this.serial = new SerialServices({ log: deps.log.child({ component: 'serial' }) }, config.services, { pollMs: config.timers.serialPollMs, openTimeoutMs: config.timers.serviceConnectTimeoutMs });
  }

  get deviceId(): string | undefined {
    return this.identity?.deviceId;
  }

  get isOnline(): boolean {
    return this.control?.isOnline === true;
  }

  stats(): AgentStats {
    let { toRelay: bytesToRelay, fromRelay: bytesFromRelay } = this.endedBytes;
    for (const socket of this.streams) {
      bytesToRelay += socket.bytesWritten;
      bytesFromRelay += socket.bytesRead;
    }
    return { pooled: this.pooled.size, streams: this.streams.size, udpSessions: this.udpSessions.total, reconnects: this.control?.reconnects ?? 0, bytesToRelay, bytesFromRelay, refusals: { ...this.refusals } };
  }

  async start(): Promise<void> {
    if (this.state !== 'idle') throw new Error(`agent cannot start in state ${this.state}`);
    this.state = 'starting';
    const log = this.deps.log;
    const relay = parseHostPort(this.config.relay);
    this.identity = await this.enrollWithRetry(relay);
    const { keyPem, certPem, caPem, relayCaPem, deviceId, ownerKeys } = this.identity;
    if (ownerKeys) {
      const book = new GrantBook({ log: log.child({ component: 'grants' }) }, { stateDir: this.config.stateDir, deviceId, ownerKeys });
      await book.load();
      this.access = new DeviceAccess({ log: log.child({ component: 'grants' }), now: this.checkTime }, book);
      this.access.start();
    }
    const outerContext = tls.createSecureContext({ key: keyPem, cert: certPem, ca: relayCaPem, ...tlsCipherOptions() });
    this.innerContext = innerSecureContext(keyPem, certPem, caPem);
    this.caX509 = new X509Certificate(caPem);
    const timeFloor = new TimeFloor({ log: log.child({ component: 'clock' }), now: this.now }, { stateDir: this.config.stateDir, relayCaPem });
    await timeFloor.load(certPem);
    timeFloor.start();
    this.timeFloor = timeFloor;
    this.target = {
      host: relay.host, port: relay.port, secureContext: outerContext, sessions: new TlsSessionCache(), gate: new ConcurrencyGate(DATA_SOCKET_HANDSHAKES, this.config.maxStreams), certCheck: timeFloor.certCheck,
    };
    // Serial paths are checked first, so the first services list already says which ports are missing.
    await this.serial.start(() => this.control?.updateServices(this.serial.describe(this.config.services)));
    const services: ServiceInfo[] = this.serial.describe(this.config.services);
    this.control = new ControlChannel(
      { log: log.child({ component: 'control' }), now: this.now },
      { host: relay.host, port: relay.port, deviceId, secureContext: outerContext, services, version: AGENT_VERSION, timers: this.config.timers, certCheck: timeFloor.certCheck },
    );
    this.control.on('command', (cmd) => this.onCommand(cmd));
    this.control.on('offline', () => this.dropPool());
    if (this.config.telemetryIntervalMs > 0) {
      const collector = new TelemetryCollector({ now: this.now }, { agentVersion: AGENT_VERSION, thermalDir: THERMAL_DIR, throttle: { sysfsPath: THROTTLED_SYSFS_PATH, vcgencmd: this.deps.vcgencmd } });
      const telemetry = new TelemetryReporter({ log: log.child({ component: 'telemetry' }), collector, sink: this.control }, { intervalMs: this.config.telemetryIntervalMs });
      this.control.on('online', () => telemetry.onOnline());
      telemetry.start();
      this.telemetry = telemetry;
    }
    this.control.start();
    this.state = 'running';
    log.info({ deviceId, services: services.map((s) => s.name) }, 'agent.started');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.abort.abort();
    if (this.poolRetryTimer) clearTimeout(this.poolRetryTimer);
    if (this.poolExpiryTimer) clearTimeout(this.poolExpiryTimer);
    this.dropPool();
    this.telemetry?.stop();
    this.timeFloor?.stop();
    this.access?.stop();
    await this.control?.stop();
    await this.serial.stop();
    // UDP sessions have no end of their own but the idle timeout: end them now, like a client's close.
    this.udpSessions.closeAll('stopping');
    // Streams in flight get the close grace to finish, then are cut.
    const closed = [...this.streams].map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve()))));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (timer = setTimeout(resolve, this.config.timers.closeGraceMs)))]);
    clearTimeout(timer);
    for (const s of this.streams) s.destroy();
    this.state = 'stopped';
    this.deps.log.info('agent.stopped');
  }

  private readonly now = (): number => (this.deps.now ?? Date.now)();
  /** Certificates are checked at the system time, or at the time floor while the clock reads earlier (clock/time-floor.ts). */
  private readonly checkTime = (): number => Math.max(this.now(), this.timeFloor?.floor ?? 0);

  /** Enrollment needs the relay; without network at boot keep trying with backoff, never exit. */
  private async enrollWithRetry(relay: { host: string; port: number }): Promise<DeviceIdentity> {
    let delay = this.config.timers.backoffBaseMs;
    for (;;) {
      try {
        return await loadOrCreateIdentity(
          { log: this.deps.log },
          {
            stateDir: this.config.stateDir, relay, caFile: this.config.caFile, caFingerprint: this.config.caFingerprint, enrollKey: this.config.enrollKey, name: this.config.name, timeoutMs: this.config.timers.connectTimeoutMs,
            claimCode: this.config.claimCode, claimCodeFile: this.config.claimCodeFile, claimConsole: this.config.claimConsole,
          },
        );
      } catch (err) {
        if (!(err instanceof PortwayError) || !err.retryable || this.abort.signal.aborted) throw err;
        const wait = Math.floor(Math.random() * delay);
        this.deps.log.warn({ code: err.code, reason: err.message, delayMs: wait }, 'agent.enroll.retry');
        await new Promise((r) => setTimeout(r, wait));
        delay = Math.min(delay * 2, this.config.timers.backoffCapMs);
      }
    }
  }

  private onCommand(cmd: DeviceCommand): void {
    if (cmd.type === 'dial') {
      this.dial(cmd.token);
    } else if (cmd.type === 'pool') {
      this.poolSize = cmd.size;
      this.poolUntil = this.now() + cmd.ttlMs;
      // Without a renewal the pool is closed when its time is up, so idle devices hold no data sockets.
      if (this.poolExpiryTimer) clearTimeout(this.poolExpiryTimer);
      this.poolExpiryTimer = setTimeout(() => {
        this.poolExpiryTimer = undefined;
        if (this.now() >= this.poolUntil) this.dropPool();
      }, cmd.ttlMs + 1);
      this.poolExpiryTimer.unref();
      this.fillPool();
    } else if (cmd.type === 'cert') {
      this.useRenewedCert(cmd).catch((err: unknown) => this.deps.log.error({ err }, 'agent.cert.renew_failed'));
    } else if (cmd.type === 'grants') {
      this.useGrants(cmd).catch((err: unknown) => this.deps.log.error({ err }, 'agent.grants.failed'));
    }
  }

  /** The owner's signed grant set, from the relay: kept only if it verifies and is newer (claim/grant-book.ts). */
  private async useGrants(cmd: GrantsCommand): Promise<void> {
    const control = this.control;
    if (!control) return;
    try {
      if (!this.access) throw new PortwayError('PW_GRANT_INVALID', 'this device was not claimed: it has no owner key to check grants with');
      const result = await this.access.offer(cmd.grants);
      if (result.changed) this.deps.log.info({ seq: result.seq, streamsEnded: result.streamsEnded }, 'agent.grants.updated');
      else this.deps.log.debug({ seq: result.seq }, 'agent.grants.unchanged');
      await control.reply(cmd.id, { ok: true }).catch(() => undefined);
    } catch (err) {
      if (!(err instanceof PortwayError)) throw err;
      this.deps.log.warn({ code: err.code, reason: err.message, held: this.access?.book.seq }, 'agent.grants.refused');
      await control.reply(cmd.id, err.toWire()).catch(() => undefined);
    }
  }

  /** A renewed certificate: checked and written, then used for every new connection (the control channel reconnects with it). */
  private async useRenewedCert(cmd: CertCommand): Promise<void> {
    const identity = this.identity;
    const control = this.control;
    if (!identity || !control || !this.target) return;
    try {
      const installed = await installRenewedCert({ certPem: cmd.certificate, deviceId: identity.deviceId, keyPem: identity.keyPem, caPem: identity.caPem, stateDir: this.config.stateDir, now: this.now() });
      this.identity = { ...identity, certPem: cmd.certificate };
      this.timeFloor?.raiseTo(cmd.certificate);
      const outerContext = tls.createSecureContext({ key: identity.keyPem, cert: cmd.certificate, ca: identity.relayCaPem, ...tlsCipherOptions() });
      this.innerContext = innerSecureContext(identity.keyPem, cmd.certificate, identity.caPem);
      this.target = { ...this.target, secureContext: outerContext, sessions: new TlsSessionCache() };
      this.deps.log.info({ notAfter: installed.notAfter.toISOString(), certFingerprint: installed.fingerprint }, 'agent.cert.renewed');
      await control.reply(cmd.id, { ok: true }).catch(() => undefined);
      control.useSecureContext(outerContext);
    } catch (err) {
      if (!(err instanceof PortwayError)) throw err;
      this.deps.log.warn({ code: err.code, reason: err.message }, 'agent.cert.renew_refused');
      await control.reply(cmd.id, err.toWire()).catch(() => undefined);
    }
  }

  private dial(token: string): void {
    const target = this.target;
    // UDP sessions hold a stream each but have their own cap (maxUdpSessions, per-service maxSessions).
    if (!target || this.streams.size - this.udpSessions.total >= this.config.maxStreams) return;
    connectDataSocket(target, { kind: 'dial', token }, this.config.timers.connectTimeoutMs, this.abort.signal).then(
      (socket) => this.serve(socket),
      (err: unknown) => this.deps.log.warn({ code: (err as PortwayError).code, reason: (err as Error).message }, 'agent.dial.failed'),
    );
  }

  private fillPool(): void {
    const target = this.target;
    if (!target || this.state !== 'running' || !this.control?.isOnline || this.poolRetryTimer) return;
    if (this.now() > this.poolUntil) {
      this.dropPool();
      return;
    }
    while (this.pooled.size + this.poolOpening < this.poolSize) {
      this.poolOpening++;
      connectDataSocket(target, { kind: 'pool' }, this.config.timers.connectTimeoutMs, this.abort.signal).then(
        (dataSocket) => {
          this.poolOpening--;
          this.pooled.add(dataSocket.raw);
          dataSocket.raw.once('close', () => {
            if (this.pooled.delete(dataSocket.raw)) this.refillLater();
          });
          this.serve(dataSocket);
        },
        (err: unknown) => {
          this.poolOpening--;
          this.deps.log.debug({ code: (err as PortwayError).code }, 'agent.pool.open_failed');
          this.refillLater();
        },
      );
    }
  }

  private refillLater(): void {
    if (this.poolRetryTimer || this.state !== 'running') return;
    this.poolRetryTimer = setTimeout(() => {
      this.poolRetryTimer = undefined;
      this.fillPool();
    }, POOL_RETRY_MS);
    this.poolRetryTimer.unref();
  }

  private dropPool(): void {
    this.poolSize = 0;
    for (const socket of this.pooled) socket.destroy();
    this.pooled.clear();
  }

  /** Wait on a data socket for STREAM_OPEN, then run the stream. */
  private serve(dataSocket: DataSocket): void {
    const socket = dataSocket.raw;
    dataSocket.tls.on('error', () => {
      // The stream (or the pool bookkeeping on the TCP socket's 'close') handles it.
    });
    const isPooled = this.pooled.has(socket);
    const timeout = isPooled ? 2 ** 31 - 1 : this.config.timers.streamHandshakeTimeoutMs;
    awaitStreamOpen(dataSocket, timeout, this.abort.signal).then(
      (open) => {
        // The replacement pooled socket is opened after this stream's handshake, not during it: both
        // handshakes would compete for the same CPU and delay the stream the user is waiting for.
        const wasPooled = this.pooled.delete(socket);
        this.streams.add(socket);
        socket.once('close', () => {
          this.streams.delete(socket);
          this.endedBytes.toRelay += socket.bytesWritten;
          this.endedBytes.fromRelay += socket.bytesRead;
        });
        const innerContext = this.innerContext as tls.SecureContext;
        runStream({ log: this.deps.log.child({ component: 'stream' }), secureContext: innerContext, ca: this.caX509 as X509Certificate, access: this.access, onAdmitted: (key) => this.access?.track(socket, key, open.service), onRefused: (code) => (this.refusals[code] = (this.refusals[code] ?? 0) + 1), now: this.checkTime, services: this.services, udpSessions: this.udpSessions, serial: this.serial.streamDeps }, dataSocket, open, {
          serviceConnectTimeoutMs: this.config.timers.serviceConnectTimeoutMs,
          handshakeTimeoutMs: this.config.timers.streamHandshakeTimeoutMs,
          closeGraceMs: this.config.timers.closeGraceMs,
          heartbeatMs: this.config.timers.streamHeartbeatMs,
        }, () => {
          if (wasPooled) this.fillPool();
        }).catch((err: unknown) => this.deps.log.error({ err }, 'agent.stream.failed'));
      },
      (err: unknown) => {
        // A pooled socket closing unused is routine; one that received something other than a well-formed
        // STREAM_OPEN is logged like a dialed one.
        const code = (err as PortwayError).code;
        if (!isPooled || code === 'PW_BAD_FRAME') this.deps.log.info({ code, pooled: isPooled }, 'agent.data_socket.closed');
        dataSocket.tls.destroy();
        socket.destroy();
      },
    );
  }
}

/**
 * The end-to-end (inner) TLS server context. Clients resume their inner session with a ticket from the
 * previous stream (TLS 1.3 PSK with ECDHE), which skips both certificate signatures; the client certificate
 * comes from the session and is checked on every stream as on a full handshake (tcp-stream.ts). OpenSSL
 * resumes sessions with client certificates only inside a named context. A renewed certificate means a
 * new context and new ticket keys: the next stream does a full handshake.
 */
function innerSecureContext(keyPem: string, certPem: string, caPem: string): tls.SecureContext {
  return tls.createSecureContext({ key: keyPem, cert: certPem, ca: caPem, sessionIdContext: 'portway-e2e', ...tlsCipherOptions() });
}
