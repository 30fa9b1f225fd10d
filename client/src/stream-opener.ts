/**
 * Opens end-to-end streams to a device service through the relay.
 *
 * cold:   TLS to the relay (user certificate) -> CLIENT_OPEN + handoff -> RELAY_STATUS + handoff ->
 *         inner TLS on the TCP connection itself -> E2E_STATUS
 * primed: the same socket opened ahead of time with `prime: true`; the relay answers at once and pairs
 *         when the inner ClientHello arrives, so a new stream costs only the inner handshake and the data
 *         round trip.
 * After the handoff (protocol/tls-records.ts) the outer TLS layer is gone: the inner session runs natively
 * on the TCP socket, and the relay splices TCP to TCP. If a primed socket fails before the inner handshake completes (the device went away
 *         meanwhile), nothing was sent yet, and the stream is retried once on a cold socket, which reports
 *         the relay's reason.
 * The inner TLS session pins the device key (known_devices.json) and checks the device ID in its certificate.
 */
import net from 'node:net';
import tls from 'node:tls';
import {
  E2E_ALPN_DATAGRAMS,
  E2E_ALPN_SERIAL_TAP,
  serviceAlpn,
  e2eStatusSchema,
  encodeFrame,
  encodePreamble,
  errorFromWire,
  FrameType,
  MAX_FRAME_BYTES,
  PortwayError,
  relayStatusSchema,
  URI_DEVICE_PREFIX,
} from '../../protocol';
import { readFrame } from '../../shared/read-frame';
import { connectRelayDataSocket, type RelaySocket } from '../../shared/relay-data-socket';
import { TlsSessionCache } from '../../shared/tls-session-cache';
import { certSpkiFingerprint } from '../../shared/x509';
import type { ClientSettings, KnownDevices } from './settings';
import { tlsCipherOptions } from '../../shared/tls-profile';

/** Failed primes in a row before refills wait; the wait starts at the base and doubles up to the max. */
const PRIME_FAILURES_BEFORE_BACKOFF = 3;
const PRIME_RETRY_BASE_MS = 1_000;
const PRIME_RETRY_MAX_MS = 60_000;

export interface OpenedStream {
  readonly inner: tls.TLSSocket;
  readonly raw: net.Socket;
  readonly deviceId: string;
  readonly streamId: string;
  /** The device's heartbeat interval from its E2E_STATUS (read here when awaitStatus), for pumpE2E. */
  readonly heartbeatMs?: number;
}

export interface StreamOpenerOptions {
  readonly timeoutMs: number;
  /** Primed sockets kept ready (0 disables priming). */
  readonly primed: number;
  /** 'udp': datagram streams (protocol/datagram-frames.ts), announced to the agent by inner-TLS ALPN. */
  readonly transport?: 'tcp' | 'udp' | 'serial-tap';
}

type OuterSocket = RelaySocket;

interface PrimedSocket extends OuterSocket {
  readonly status: { deviceId: string; streamId: string; deviceKey: string };
  readonly onClose: () => void;
}

export class StreamOpener {
  private readonly outerContext: tls.SecureContext;
  private readonly innerContext: tls.SecureContext;
  private readonly sessions = new TlsSessionCache();
  /** Tickets of the device's inner TLS sessions: the next stream resumes (no certificate signatures). */
  private readonly innerSessions = new TlsSessionCache();
  private readonly ready: PrimedSocket[] = [];
  private priming = 0;
  private closed = false;
  private primeFailures = 0;
  private primeRetryAt = 0;

  constructor(
    private readonly deps: { settings: ClientSettings; known: KnownDevices },
    private readonly target: { device: string; service: string },
    private readonly options: StreamOpenerOptions,
  ) {
    const s = deps.settings;
    this.outerContext = tls.createSecureContext({ key: s.keyPem, cert: s.certPem, ca: s.relayCaPem, ...tlsCipherOptions() });
    this.innerContext = tls.createSecureContext({ key: s.keyPem, cert: s.certPem, ca: s.caPem, ...tlsCipherOptions() });
  }

  /**
   * Open one stream; uses a primed socket when one is ready. With `awaitStatus: false` it resolves right
   * after the end-to-end handshake and the caller reads the device's E2E_STATUS (pumpE2E's expectStatus),
   * so the first request travels with the status instead of after it.
   */
  async open(options: { awaitStatus: boolean } = { awaitStatus: true }): Promise<OpenedStream> {
    // The replacement primed socket is opened once this stream's handshake is done, not during it: both
    // handshakes would compete for the same CPU here and at the relay, and delay the stream being waited for.
    try {
      const primed = this.takePrimed();
      if (primed) {
        try {
          return await this.finish(primed, primed.status, options.awaitStatus);
        } catch (err) {
          if (!(err instanceof PortwayError) || err.code !== 'PW_E2E_HANDSHAKE_FAILED') throw err;
        }
      }
      const outer = await this.connectOuter();
      const status = await this.sendOpen(outer, false);
      return await this.finish(outer, status, options.awaitStatus);
    } finally {
      this.refill();
    }
  }

  /**
   * Start keeping primed sockets (after the first successful stream, or right away). After failed primes
   * in a row (device offline, relay down) it waits before trying again, doubling up to a minute, so a
   * long-running `connect` primes again once the device is back; streams meanwhile open cold.
   */
  refill(): void {
    if (this.closed || Date.now() < this.primeRetryAt) return;
    while (this.ready.length + this.priming < this.options.primed) {
      this.priming++;
      this.primeOne().then(
        (p) => {
          this.priming--;
          this.primeFailures = 0;
          if (this.closed) p.raw.destroy();
          else this.ready.push(p);
        },
        () => {
          this.priming--;
          this.primeFailures++;
          if (this.primeFailures > PRIME_FAILURES_BEFORE_BACKOFF) {
            this.primeRetryAt = Date.now() + Math.min(PRIME_RETRY_MAX_MS, PRIME_RETRY_BASE_MS * 2 ** (this.primeFailures - PRIME_FAILURES_BEFORE_BACKOFF - 1));
          }
        },
      );
    }
  }

  /** Prime one socket now, reporting the relay's refusal (unknown device, offline, not exposed, ...). */
  async primeNow(): Promise<void> {
    const primed = await this.primeOne();
    if (this.closed) primed.raw.destroy();
    else this.ready.push(primed);
  }

  close(): void {
    this.closed = true;
    for (const p of this.ready.splice(0)) p.raw.destroy();
  }

  private takePrimed(): PrimedSocket | undefined {
    while (this.ready.length > 0) {
      const p = this.ready.shift() as PrimedSocket;
      if (!p.raw.destroyed && p.raw.readyState === 'open' && p.raw.readableLength === 0) {
        p.raw.off('readable', onPrimedReadable);
        p.raw.off('close', p.onClose);
        return p;
      }
      p.raw.destroy();
    }
    return undefined;
  }

  private async primeOne(): Promise<PrimedSocket> {
    const outer = await this.connectOuter();
    const status = await this.sendOpen(outer, true);
    // While it waits, the relay sends nothing; if it closes the socket (the device went away), it is dropped.
    const onClose = (): void => {
      const i = this.ready.findIndex((p) => p.raw === outer.raw);
      if (i >= 0) this.ready.splice(i, 1);
    };
    outer.raw.on('readable', onPrimedReadable);
    outer.raw.once('close', onClose);
    return { ...outer, status, onClose };
  }

  private connectOuter(): Promise<OuterSocket> {
    const { relay } = this.deps.settings;
    return connectRelayDataSocket({ host: relay.host, port: relay.port, secureContext: this.outerContext, sessions: this.sessions, timeoutMs: this.options.timeoutMs });
  }

  private async sendOpen(outer: OuterSocket, prime: boolean): Promise<{ deviceId: string; streamId: string; deviceKey: string }> {
    // The request is the last thing this side sends in TLS; the inner session follows on the TCP connection.
    outer.tls.write(Buffer.concat([encodePreamble(), encodeFrame(FrameType.CLIENT_OPEN, { device: this.target.device, service: this.target.service, prime })]), () => outer.carrier.handOffWrites());
    let frame;
    try {
      frame = await readFrame(outer.tls, { expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, timeoutMs: this.options.timeoutMs });
    } catch (err) {
      outer.raw.destroy();
      throw err;
    }
    const status = relayStatusSchema.safeParse(frame.payload);
    if (frame.type !== FrameType.RELAY_STATUS || !status.success) {
      outer.raw.destroy();
      throw new PortwayError('PW_BAD_FRAME', 'relay sent something other than a status frame');
    }
    if (!status.data.ok) {
      outer.raw.destroy();
      throw errorFromWire(status.data.code, status.data.message);
    }
    try {
      await this.deps.known.check(status.data.deviceId, status.data.deviceKey);
      // The relay's handoff marker follows its status at once.
      await outer.carrier.whenPeerHandsOff(this.options.timeoutMs, 'no handoff from the relay');
      if (outer.tls.readableLength > 0) throw new PortwayError('PW_BAD_FRAME', 'relay sent more than its status before the handoff');
    } catch (err) {
      outer.raw.destroy();
      throw err;
    }
    outer.tls.destroy();
    return status.data;
  }

  /** Run the inner TLS session on `outer`, verify the device, and read E2E_STATUS. */
  private async finish(outer: OuterSocket, status: { deviceId: string; streamId: string }, awaitStatus: boolean): Promise<OpenedStream> {
    const pinned = this.deps.known.get(status.deviceId);
    const inner = tls.connect({
      socket: outer.raw,
      secureContext: this.innerContext,
      servername: undefined,
      session: this.innerSessions.take(),
      // The transport, and the service asked for, bound into the handshake (protocol/e2e-service.ts).
      ALPNProtocols: [...(this.options.transport === 'udp' ? [E2E_ALPN_DATAGRAMS] : this.options.transport === 'serial-tap' ? [E2E_ALPN_SERIAL_TAP] : []), serviceAlpn(this.target.service)],
      checkServerIdentity: (_host, cert) => {
        const uris = (cert.subjectaltname ?? '').split(', ').filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
        if (!uris.includes(`${URI_DEVICE_PREFIX}${status.deviceId}`)) return new PortwayError('PW_E2E_DEVICE_KEY_MISMATCH', 'end-to-end peer is not the device the relay paired');
        const key = cert.raw ? certSpkiFingerprint(cert.raw) : '';
        if (pinned !== undefined && key !== pinned) return new PortwayError('PW_E2E_DEVICE_KEY_MISMATCH', `device ${status.deviceId} presented a key other than the pinned one`);
        return undefined;
      },
    });
    inner.on('error', () => {
      // Reported by the promise below or the pump.
    });
    this.innerSessions.watch(inner);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new PortwayError('PW_E2E_HANDSHAKE_FAILED', 'end-to-end handshake timeout')), this.options.timeoutMs);
        inner.once('secureConnect', () => {
          clearTimeout(timer);
          resolve();
        });
        inner.once('error', (err) => {
          clearTimeout(timer);
          reject(err instanceof PortwayError ? err : new PortwayError('PW_E2E_HANDSHAKE_FAILED', `end-to-end handshake failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
        });
        inner.once('close', () => {
          clearTimeout(timer);
          reject(new PortwayError('PW_E2E_HANDSHAKE_FAILED', 'the relay closed the stream during the end-to-end handshake'));
        });
      });
      if (this.options.transport === 'serial-tap' && inner.alpnProtocol !== E2E_ALPN_SERIAL_TAP) {
        throw new PortwayError('PW_SERVICE_TYPE_MISMATCH', `the agent on ${status.deviceId} does not offer read-only serial taps`);
      }
      if (this.options.transport === 'udp' && inner.alpnProtocol !== E2E_ALPN_DATAGRAMS) {
        throw new PortwayError('PW_SERVICE_TYPE_MISMATCH', `the agent on ${status.deviceId} does not support UDP services`);
      }
      if (!awaitStatus) return { inner, raw: outer.raw, deviceId: status.deviceId, streamId: status.streamId };
      const frame = await readFrame(inner, { expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, timeoutMs: this.options.timeoutMs });
      const e2e = e2eStatusSchema.safeParse(frame.payload);
      if (frame.type !== FrameType.E2E_STATUS || !e2e.success) throw new PortwayError('PW_BAD_FRAME', 'device sent something other than a status frame');
      if (!e2e.data.ok) throw errorFromWire(e2e.data.code, e2e.data.message);
      const { heartbeatMs } = e2e.data;
      return { inner, raw: outer.raw, deviceId: status.deviceId, streamId: status.streamId, ...(heartbeatMs !== undefined ? { heartbeatMs } : {}) };
    } catch (err) {
      inner.destroy();
      outer.raw.destroy();
      throw err;
    }
  }
}

function onPrimedReadable(this: net.Socket): void {
  // The relay sends nothing on a primed socket before the inner session starts; anything (or its end)
  // means the socket is no good: drop it.
  this.destroy();
}
