/**
 * Open one data socket to the relay (TLS, ALPN portway-data/1, the device certificate as client
 * certificate), introduce it with AGENT_HELLO and wait for STREAM_OPEN.
 */
import tls from 'node:tls';
import { encodeFrame, encodePreamble, FrameType, MAX_FRAME_BYTES, PortwayError, streamOpenSchema, type AgentHello, type StreamOpen } from '../../protocol';
import { readFrame } from '../../shared/read-frame';
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
  const socket = await connectRelayDataSocket({ host: target.host, port: target.port, secureContext: target.secureContext, sessions: target.sessions, timeoutMs, signal });
  socket.tls.setKeepAlive(true, 15_000);
  socket.tls.write(Buffer.concat([encodePreamble(), encodeFrame(FrameType.AGENT_HELLO, hello)]));
  return socket;
}

/** Wait for the relay's STREAM_OPEN (a pooled socket may wait long; a dialed one gets it at once). */
export async function awaitStreamOpen(socket: tls.TLSSocket, timeoutMs: number, signal: AbortSignal): Promise<StreamOpen> {
  const frame = await readFrame(socket, { expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES, timeoutMs, signal });
  if (frame.type !== FrameType.STREAM_OPEN) throw new PortwayError('PW_BAD_FRAME', `expected STREAM_OPEN, got frame type 0x${frame.type.toString(16)}`);
  const open = streamOpenSchema.safeParse(frame.payload);
  if (!open.success) throw new PortwayError('PW_BAD_FRAME', 'malformed STREAM_OPEN');
  return open.data;
}
