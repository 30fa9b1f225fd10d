/**
 * Open one data socket to the relay (TLS, ALPN portway-data/1, the device certificate as client
 * certificate), introduce it with AGENT_HELLO and wait for STREAM_OPEN. STREAM_OPEN is the relay's last
 * TLS record, followed by its handoff marker; the agent answers with its own marker, and from there the TCP
 * connection carries the inner end-to-end session (protocol/tls-records.ts).
 */
import type tls from 'node:tls';
import { encodeFrame, encodePreamble, FrameType, MAX_FRAME_BYTES, PortwayError, streamOpenSchema, type AgentHello, type StreamOpen } from '../../protocol';
import { readFrame } from '../../shared/read-frame';
import type { RelayCertCheck } from '../../shared/relay-cert-at';
import { connectRelayDataSocket, type RelaySocket } from '../../shared/relay-data-socket';
import type { ConcurrencyGate } from '../../shared/concurrency-gate';
import type { TlsSessionCache } from '../../shared/tls-session-cache';

export interface DataSocketTarget {
  readonly host: string;
  readonly port: number;
  readonly secureContext: tls.SecureContext;
  /** Tickets for resuming the TLS session (cheaper than a full handshake). */
  readonly sessions?: TlsSessionCache;
  /** Bounds concurrent handshakes (bursts of dials). */
  readonly gate?: ConcurrencyGate;
  /** While the clock is not known: check the relay certificate at the time floor (clock/time-floor.ts). */
  readonly certCheck?: () => RelayCertCheck | undefined;
}

/** A data socket: the TLS session with the relay, and the TCP connection under it (reset when a stream is cut). */
export type DataSocket = RelaySocket;

export async function connectDataSocket(target: DataSocketTarget, hello: AgentHello, timeoutMs: number, signal: AbortSignal): Promise<DataSocket> {
  const release = target.gate ? await target.gate.acquire() : () => undefined;
  try {
    return await handshake(target, hello, timeoutMs, signal);
  } finally {
    release();
  }
}

async function handshake(target: DataSocketTarget, hello: AgentHello, timeoutMs: number, signal: AbortSignal): Promise<DataSocket> {
  const socket = await connectRelayDataSocket({ host: target.host, port: target.port, secureContext: target.secureContext, sessions: target.sessions, timeoutMs, signal, certCheck: target.certCheck });
  socket.raw.setKeepAlive(true, 15_000);
  socket.tls.write(Buffer.concat([encodePreamble(), encodeFrame(FrameType.AGENT_HELLO, hello)]));
  return socket;
}

/**
 * Wait for the relay's STREAM_OPEN (a pooled socket may wait long; a dialed one gets it at once), then end
 * the outer TLS layer both ways: the relay's marker follows STREAM_OPEN, the agent sends its own. Afterwards
 * `socket.raw` is the stream's transport and the outer TLS socket is gone.
 */
export async function awaitStreamOpen(socket: DataSocket, timeoutMs: number, signal: AbortSignal): Promise<StreamOpen> {
  const frame = await readFrame(socket.tls, { expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, timeoutMs, signal });
  if (frame.type !== FrameType.STREAM_OPEN) throw new PortwayError('PW_BAD_FRAME', `expected STREAM_OPEN, got frame type 0x${frame.type.toString(16)}`);
  const open = streamOpenSchema.safeParse(frame.payload);
  if (!open.success) throw new PortwayError('PW_BAD_FRAME', 'malformed STREAM_OPEN');
  await socket.carrier.whenPeerHandsOff(HANDOFF_TIMEOUT_MS, 'no handoff from the relay after STREAM_OPEN');
  if (socket.tls.readableLength > 0) throw new PortwayError('PW_BAD_FRAME', 'relay sent more than STREAM_OPEN before the handoff');
  socket.carrier.handOffWrites();
  socket.tls.destroy();
  return open.data;
}

/** The relay writes its marker right behind STREAM_OPEN; it only waits on TCP. */
const HANDOFF_TIMEOUT_MS = 10_000;
