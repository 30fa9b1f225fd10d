/**
 * Moves service bytes between a local connection and the inner (end-to-end) TLS session, on both the agent
 * and the forward proxy, using the chunk framing of protocol/e2e-frames.ts.
 *
 * - Backpressure: once a side's socket holds PUMP_QUEUE_BYTES or more in its user-space write queue, the other
 *   side is paused until 'drain'. (Not on write() returning false: it does so for any chunk of at least the
 *   16 KiB high-water mark, even one the kernel took at once, and pausing on that stopped and restarted the
 *   reading side once per chunk.)
 * - Coalescing: bytes for the local side are corked and written once per event-loop turn, so the records
 *   of one TCP read of the inner session reach the local socket in one system call instead of one per
 *   16 KiB TLS record.
 * - Half-close: local EOF becomes a FIN frame; a received FIN ends the local write side.
 * - Abort: if the inner session ends or fails before its FIN arrived, or the local side fails, the other
 *   side is reset (RST for sockets), never ended cleanly, so an application never mistakes a cut stream
 *   for a complete one.
 * - Integrity: the inner session is TLS 1.3, so a record the relay (or anything on the path) altered, replayed,
 *   dropped, reordered or forged fails its AEAD check at the receiving end (OpenSSL: bad record MAC), which sends
 *   the bad_record_mac alert to the other end. Either failure, and a write on a session OpenSSL already failed
 *   (EPROTO), ends the stream with PW_E2E_INTEGRITY in the result's `error`, not a bare abort.
 * - Liveness (protocol/e2e-frames.ts HEARTBEAT): with a heartbeat interval, a side that wrote nothing for an
 *   interval sends a heartbeat (until both FINs), and a side that heard nothing for DEAD_AFTER_HEARTBEATS
 *   intervals while it was reading aborts: a silent path (blackholed, NAT mapping gone) ends the stream
 *   instead of hanging it. Time in which this side itself held its reading back (its local sink was full)
 *   does not count. The agent passes its interval; the forward proxy takes the device's from E2E_STATUS.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  ChunkDecoder,
  e2eStatusSchema,
  encodeChunkHeader,
  encodeFin,
  encodeHeartbeat,
  errorFromWire,
  FrameDecoder,
  FrameType,
  MAX_E2E_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  PortwayError,
  type ChunkEvent,
} from '../protocol';

export interface PumpResult {
  readonly outcome: 'complete' | 'aborted';
  readonly reason?: string;
  readonly bytesToLocal: number;
  readonly bytesFromLocal: number;
  /**
   * Set when the stream failed with a code its user must see: the peer's refusal in its E2E_STATUS (with
   * `expectStatus`), or PW_E2E_INTEGRITY when the inner session failed its integrity check (see above).
   */
  readonly error?: PortwayError;
}

export interface PumpOptions {
  /** After both FINs, how long to wait for the peer to close the inner session before destroying it. */
  readonly closeGraceMs: number;
  /**
   * The forward proxy's side: the device's E2E_STATUS frame has not been read yet. Local bytes are sent
   * at once (pipelined with the status, saving a round trip); the status is read before any service byte
   * is passed on, and a refusal resets the local connection and is reported in the result.
   */
  readonly expectStatus?: boolean;
  /**
   * The TCP connection to the relay that carries `inner`; on abort it is reset (RST) instead of closed. The
   * relay only splices ciphertext and Node reports a TLS end without close_notify as a clean end, so a FIN
   * here would tell it (and through it the far end) that the stream ended in order; a reset says it was cut.
   */
  readonly transport?: Socket;
  /** Heartbeat interval of this side (the agent's); the forward proxy's comes from the device's E2E_STATUS. */
  readonly heartbeatMs?: number;
}

/** A stream that heard nothing (data or heartbeat) for this many of its heartbeat intervals is dead. */
export const DEAD_AFTER_HEARTBEATS = 3;

/**
 * Bytes a socket's user-space write queue may hold (plus the one chunk that crossed it) before the pump stops
 * reading the side that feeds it; at least the socket's own high-water mark. A few 64 KiB reads' worth, so a
 * burst of TLS records or a TLS write still in flight does not stop the reader each time.
 */
export const PUMP_QUEUE_BYTES = 128 * 1024;

/** Whether `stream` holds enough queued bytes that the pump should stop feeding it (see PUMP_QUEUE_BYTES). */
function isQueueFull(stream: Duplex): boolean {
  return stream.writableLength >= Math.max(PUMP_QUEUE_BYTES, stream.writableHighWaterMark);
}

export function pumpE2E(inner: Duplex, local: Duplex, options: PumpOptions): Promise<PumpResult> {
  return new Promise<PumpResult>((resolve) => {
    const decoder = new ChunkDecoder();
    let statusDecoder = options.expectStatus ? new FrameDecoder({ expectPreamble: false, maxFrameBytes: MAX_FRAME_BYTES }) : undefined;
    let refusal: PortwayError | undefined;
    let bytesToLocal = 0;
    let bytesFromLocal = 0;
    let sentFin = false;
    let gotFin = false;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    let heartbeatTimer: NodeJS.Timeout | undefined;
    let wroteAt = Date.now();
    let heardAt = Date.now();
    /** This side stopped reading the inner session because its local sink is full. */
    let isHoldingReads = false;
    /** This side stopped reading the local side because the inner session's write queue is full. */
    let isHoldingLocal = false;
    /** Local writes of this event-loop turn are corked; a setImmediate uncorks them (one system call). */
    let isLocalCorked = false;

    const cleanup = (): void => {
      local.off('data', onLocalData);
      local.off('end', onLocalEnd);
      local.off('error', onLocalError);
      local.off('close', onLocalClose);
      local.off('drain', onLocalDrain);
      inner.off('data', onInnerData);
      inner.off('drain', onInnerDrain);
      inner.off('end', onInnerEnd);
      inner.off('close', onInnerClose);
      inner.off('error', onInnerError);
      // Late errors after we are done must not become uncaught exceptions.
      local.on('error', ignoreLateError);
      inner.on('error', ignoreLateError);
    };
    const settle = (outcome: PumpResult['outcome'], reason?: string): void => {
      if (settled) return;
      settled = true;
      if (graceTimer) clearTimeout(graceTimer);
      if (heartbeatTimer) clearInterval(heartbeatTimer);
      cleanup();
      resolve({ outcome, reason, bytesToLocal, bytesFromLocal, error: refusal });
    };
    const abort = (reason: string): void => {
      if (settled) return;
      // Settle first: an error raised while tearing down (resetting a socket whose write side was already
      // shut down fails with EINVAL) must not re-enter here and replace the reason.
      settle('aborted', reason);
      if (local instanceof Socket) {
        resetSocket(local, options.closeGraceMs);
      } else {
        local.destroy(new PortwayError('PW_STREAM_ABORTED', reason));
      }
      const transport = options.transport;
      if (!transport) {
        inner.destroy();
        return;
      }
      // Reset (RST, so the relay sees an abort) and destroy the TLS session on it one turn later, outside the
      // TLS wrap's callback this may run in: resetting the TCP handle under a wrap that is still dispatching,
      // then destroying the wrap, crashed the forward proxy with SIGSEGV (a UDP session storm evicting sessions
      // whose streams were still opening: reliability-udp-storm.test.ts; the relay met it in tls-front.ts).
      setImmediate(() => {
        resetSocket(transport, options.closeGraceMs);
        inner.destroy();
      });
    };
    const maybeFinish = (): void => {
      if (!(sentFin && gotFin) || graceTimer) return;
      inner.end();
      graceTimer = setTimeout(() => {
        inner.destroy();
        settle('complete');
      }, options.closeGraceMs);
      graceTimer.unref();
    };

    const startHeartbeats = (intervalMs: number): void => {
      heartbeatTimer = setInterval(() => {
        if (sentFin && gotFin) return;
        const now = Date.now();
        if (now - wroteAt >= intervalMs && inner.writable) {
          inner.write(encodeHeartbeat());
          wroteAt = now;
        }
        const silentMs = now - heardAt;
        if (!isHoldingReads && silentMs > DEAD_AFTER_HEARTBEATS * intervalMs) abort(`nothing from the peer for ${silentMs} ms (heartbeats every ${intervalMs} ms): the path is dead`);
      }, Math.max(50, Math.floor(intervalMs / 2)));
      heartbeatTimer.unref();
    };

    const onLocalData = (chunk: Buffer): void => {
      bytesFromLocal += chunk.length;
      wroteAt = Date.now();
      inner.cork();
      for (let offset = 0; offset < chunk.length; offset += MAX_E2E_CHUNK_BYTES) {
        const piece = chunk.length <= MAX_E2E_CHUNK_BYTES ? chunk : chunk.subarray(offset, offset + MAX_E2E_CHUNK_BYTES);
        inner.write(encodeChunkHeader(piece.length));
        inner.write(piece);
      }
      inner.uncork();
      if (isQueueFull(inner)) {
        isHoldingLocal = true;
        local.pause();
      }
    };
    const onInnerDrain = (): void => {
      if (!isHoldingLocal) return;
      isHoldingLocal = false;
      if (!sentFin) local.resume();
    };
    const uncorkLocal = (): void => {
      isLocalCorked = false;
      local.uncork();
    };
    const onLocalEnd = (): void => {
      sentFin = true;
      wroteAt = Date.now();
      inner.write(encodeFin());
      maybeFinish();
    };
    const onLocalError = (err: Error): void => abort(`local connection failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
    const onLocalClose = (): void => {
      // A local socket that closes without having sent its EOF was cut (reset or destroyed).
      if (!sentFin) abort('local connection closed without EOF');
      else if (!gotFin) abort('local connection closed before the peer finished');
    };

    const onChunkEvent = (event: ChunkEvent): void => {
      if (event.kind === 'data') {
        bytesToLocal += event.data.length;
        if (!isLocalCorked) {
          isLocalCorked = true;
          local.cork();
          setImmediate(uncorkLocal);
        }
        local.write(event.data);
        if (!isHoldingReads && isQueueFull(local)) {
          isHoldingReads = true;
          inner.pause();
        }
      } else if (event.kind === 'fin') {
        gotFin = true;
        local.end();
        maybeFinish();
      } else if (event.kind === 'error') {
        abort(`bad end-to-end framing: ${event.reason}`);
      }
      // A heartbeat carries nothing: that it arrived (heardAt) is all it says.
    };
    const onInnerData = (data: Buffer): void => {
      heardAt = Date.now();
      if (statusDecoder) {
        const result = statusDecoder.push(data);
        if (result.kind === 'need-more') return;
        statusDecoder = undefined;
        if (result.kind === 'error') {
          abort(`bad status frame: ${result.error.message}`);
          return;
        }
        const status = e2eStatusSchema.safeParse(result.frame.payload);
        if (result.frame.type !== FrameType.E2E_STATUS || !status.success) {
          abort('device sent something other than a status frame');
          return;
        }
        if (!status.data.ok) {
          refusal = errorFromWire(status.data.code, status.data.message);
          abort(refusal.message);
          return;
        }
        if (status.data.heartbeatMs !== undefined) startHeartbeats(status.data.heartbeatMs);
        if (result.rest.length === 0) return;
        data = result.rest;
      }
      decoder.push(data, onChunkEvent);
    };
    const onLocalDrain = (): void => {
      if (!isHoldingReads) return;
      isHoldingReads = false;
      heardAt = Date.now();
      if (!gotFin) inner.resume();
    };
    const onInnerEnd = (): void => {
      // The peer ends the session only after both FINs; before that, an end means it gave up. (A TLS socket
      // would close at once and abort below, but an inner stream that allows half-open would just wait.)
      if (!gotFin) abort('end-to-end session ended before the peer finished its stream');
      else if (!sentFin) abort('end-to-end session ended before the local side finished');
    };
    const onInnerClose = (): void => {
      if (sentFin && gotFin) settle('complete');
      else abort('end-to-end session closed before both directions finished');
    };
    const onInnerError = (err: Error): void => {
      const code = (err as NodeJS.ErrnoException).code;
      if (isIntegrityFailure(err)) {
        refusal ??= new PortwayError('PW_E2E_INTEGRITY', `end-to-end integrity check failed (${code ?? 'TLS'}): a record was altered, replayed or forged on the path`, { cause: err });
        abort(refusal.message);
      } else abort(`end-to-end session failed: ${code ?? err.message}`);
    };

    local.on('data', onLocalData);
    local.on('end', onLocalEnd);
    local.on('error', onLocalError);
    local.on('close', onLocalClose);
    local.on('drain', onLocalDrain);
    inner.on('data', onInnerData);
    inner.on('drain', onInnerDrain);
    inner.on('end', onInnerEnd);
    inner.on('close', onInnerClose);
    inner.on('error', onInnerError);
    // A side that closed before the pump started emits nothing more (the client left while its stream was
    // opening, or the peer while the agent connected to its service): settle now instead of never.
    if (local.destroyed) abort('local connection closed before the stream started');
    else if (inner.destroyed) abort('end-to-end session closed before the stream started');
    else if (options.heartbeatMs !== undefined) startHeartbeats(options.heartbeatMs);
  });
}

/**
 * Does this error of an established inner TLS session mean its records failed the integrity check? OpenSSL's
 * record-layer failures (ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC where a record fails to decrypt,
 * ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC at the end that receives the alert, and any other ERR_SSL_* once the
 * handshake is done: nothing but altered records can cause one), and EPROTO, which Node reports when it writes
 * on a session OpenSSL has already failed (the agent, echoing, usually writes before it reads the bad record).
 * The pump only ever sees established sessions; handshake failures are reported before it starts.
 */
export function isIntegrityFailure(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' && (code.startsWith('ERR_SSL_') || code === 'EPROTO');
}

/** Reset a socket (RST), so its application sees an error, never a clean end. */
function resetSocket(socket: Socket, graceMs: number): void {
  if (socket.destroyed) return;
  // While its write side is shutting down (everything flushed, the FIN on its way) libuv refuses a reset
  // with EINVAL, and Node then never closes the handle: the descriptor would leak. Reset right after.
  if (socket.writableEnded && !socket.writableFinished && socket.writableLength === 0) {
    const timer = setTimeout(() => socket.destroy(), graceMs);
    timer.unref();
    socket.once('finish', () => {
      clearTimeout(timer);
      socket.resetAndDestroy();
    });
    socket.once('close', () => clearTimeout(timer));
    return;
  }
  socket.resetAndDestroy();
}

function ignoreLateError(): void {
  // Errors after the pump settled: the stream's outcome is already decided and reported.
}
