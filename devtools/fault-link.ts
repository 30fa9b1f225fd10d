/**
 * One direction of one proxied connection: reads `source`, applies the direction's toxics, writes `sink`.
 *
 * Every chunk read gets a due time when it arrives: `max(max(arrival, floor) + delay, previous due)`, where
 * `delay` is one latency draw (plus `i × slicer.delayMs` for the i-th slice) and `floor` is the earliest
 * time the sender could have sent on a real link (see delayConnect in fault-proxy.ts). Chunks leave in
 * arrival order, never before their due time, and with a bandwidth toxic no faster than the rate. So the
 * delay is a fixed one-way delay per chunk, not a pause between chunks, and byte order is kept.
 *
 * Buffering: the queue holds what latency keeps "in flight" (rate × delay). It is capped at
 * `maxBufferedBytes`; at the cap, or while the sink's write() returns false, or while paused, the source is
 * paused, so a fast sender is back-pressured like a full TCP window.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  type DirectionToxics,
  type RandomSource,
  nextFlipGap,
  randomInt,
  sampleDelayMs,
  sliceChunk,
} from './fault-toxics';

export interface DirectionCounters {
  /** Bytes read from the source. */
  bytesIn: number;
  /** Bytes written to the sink. */
  bytesOut: number;
  /** Bytes read but never written (blackhole, half-close, limit, teardown). */
  bytesDropped: number;
}

export interface FaultLinkDeps {
  readonly source: Socket;
  readonly sink: Socket;
  /** Live view of the direction's toxics. */
  readonly toxics: () => DirectionToxics;
  readonly counters: DirectionCounters;
  readonly random: RandomSource;
  /** Called once, after the last byte allowed by limit_data was written. */
  readonly onLimitReached: () => void;
}

export interface FaultLinkOptions {
  readonly maxBufferedBytes: number;
}

interface Chunk {
  data: Buffer;
  readonly arrivalAt: number;
  readonly delayMs: number;
  dueAt: number;
}

/** Largest piece written at once under a bandwidth toxic, so pacing stays smooth. */
const MAX_PACED_PIECE_BYTES = 16 * 1024;
/** Pieces under a bandwidth toxic carry about this much time's worth of bytes. */
const PACING_QUANTUM_MS = 20;

export class FaultLink {
  /** Bytes this link wrote to its sink. */
  forwardedBytes = 0;
  /** Chunks in flight; `queue[head]` is the oldest (a deque without O(n) shift). */
  private queue: Chunk[] = [];
  private head = 0;
  private queuedBytes = 0;
  /** Earliest virtual send time; null until the connection is established (upstream connected). */
  private floorAt: number | null = null;
  private lastDueAt = 0;
  private bandwidthFreeAt = 0;
  /** Offset of the next source byte in this direction's stream. */
  private sourceOffset = 0;
  /** Bytes accepted for forwarding (what limit_data counts). */
  private acceptedBytes = 0;
  private nextRandomFlipAt: number | null = null;
  private flipProbability = 0;
  private sourceState: 'open' | 'ended' = 'open';
  private sinkState: 'writable' | 'blocked' | 'ended' = 'writable';
  private limitState: 'under' | 'reached' | 'reported' = 'under';
  private timer: NodeJS.Timeout | null = null;
  private isDisposed = false;

  constructor(
    private readonly deps: FaultLinkDeps,
    private readonly options: FaultLinkOptions,
  ) {
    deps.source.on('data', (data: Buffer) => this.onData(data));
    deps.source.on('end', () => this.onEnd());
  }

  /** Lets queued and future chunks flow; none leaves before `floorAt` + its delay. */
  establish(floorAt: number): void {
    this.floorAt = floorAt;
    for (let i = this.head; i < this.queue.length; i++) {
      const chunk = this.queue[i] as Chunk;
      chunk.dueAt = this.dueAt(chunk.arrivalAt, chunk.delayMs);
    }
    this.checkLimit();
    this.pump();
  }

  /** Re-reads the toxics (call after any change). */
  refresh(): void {
    this.clearTimer();
    this.checkLimit();
    this.pump();
  }

  /** Drops what is queued and stops all timers; the owner destroys the sockets. */
  dispose(): void {
    this.isDisposed = true;
    this.clearTimer();
    this.dropQueue();
  }

  private onData(data: Buffer): void {
    const toxics = this.deps.toxics();
    const counters = this.deps.counters;
    const offset = this.sourceOffset;
    counters.bytesIn += data.length;
    this.sourceOffset += data.length;
    const isDropping = toxics.isBlackholed || toxics.isHalfClosed || this.sinkState === 'ended';
    if (this.isDisposed || isDropping || this.limitState !== 'under') {
      counters.bytesDropped += data.length;
      return;
    }
    let accepted = data;
    if (toxics.limitData !== null) {
      const room = Math.max(0, toxics.limitData.bytes - this.acceptedBytes);
      if (room < accepted.length) {
        counters.bytesDropped += accepted.length - room;
        accepted = accepted.subarray(0, room);
        this.limitState = 'reached';
      }
    }
    this.acceptedBytes += accepted.length;
    this.checkLimit();
    accepted = this.flipBits(accepted, offset, toxics);
    const now = performance.now();
    const delayMs = sampleDelayMs(toxics.latency, this.deps.random);
    const pieces = toxics.slicer === null ? [accepted] : sliceChunk(accepted, toxics.slicer, this.deps.random);
    const sliceDelayMs = toxics.slicer?.delayMs ?? 0;
    pieces.forEach((piece, index) => {
      if (piece.length === 0) return;
      const pieceDelayMs = delayMs + index * sliceDelayMs;
      this.queue.push({ data: piece, arrivalAt: now, delayMs: pieceDelayMs, dueAt: this.dueAt(now, pieceDelayMs) });
      this.queuedBytes += piece.length;
    });
    this.pump();
  }

  private onEnd(): void {
    this.sourceState = 'ended';
    this.pump();
  }

  private dueAt(arrivalAt: number, delayMs: number): number {
    if (this.floorAt === null) return Number.NaN;
    const dueAt = Math.max(Math.max(arrivalAt, this.floorAt) + delayMs, this.lastDueAt);
    this.lastDueAt = dueAt;
    return dueAt;
  }

  private flipBits(data: Buffer, offset: number, toxics: DirectionToxics): Buffer {
    const bitflip = toxics.bitflip;
    if (bitflip === null || data.length === 0) return data;
    if ('atByte' in bitflip) {
      const index = bitflip.atByte - offset;
      if (index < 0 || index >= data.length) return data;
      const copy = Buffer.from(data);
      copy[index] = (copy[index] ?? 0) ^ (1 << (bitflip.bit ?? 0));
      return copy;
    }
    let flipAt = this.nextRandomFlipAt;
    if (flipAt === null || flipAt < offset || this.flipProbability !== bitflip.probability) {
      this.flipProbability = bitflip.probability;
      flipAt = offset + nextFlipGap(bitflip.probability, this.deps.random);
    }
    let copy: Buffer | null = null;
    while (flipAt < offset + data.length) {
      copy ??= Buffer.from(data);
      const index = flipAt - offset;
      copy[index] = (copy[index] ?? 0) ^ (1 << randomInt(0, 7, this.deps.random));
      flipAt += 1 + nextFlipGap(bitflip.probability, this.deps.random);
    }
    this.nextRandomFlipAt = flipAt;
    return copy ?? data;
  }

  private checkLimit(): void {
    const limit = this.deps.toxics().limitData;
    if (limit !== null && this.limitState === 'under' && this.acceptedBytes >= limit.bytes) {
      this.limitState = 'reached';
    }
  }

  /** Writes every chunk that is due and arms one timer for the next, then settles end and flow control. */
  private pump(): void {
    if (this.isDisposed) return;
    const toxics = this.deps.toxics();
    if (toxics.isBlackholed) this.dropQueue();
    if (this.timer === null) this.writeDue(toxics);
    this.settleEnd(toxics);
    this.updateFlow(toxics);
  }

  private writeDue(toxics: DirectionToxics): void {
    while (this.head < this.queue.length && this.canWrite(toxics)) {
      const chunk = this.queue[this.head] as Chunk;
      const now = performance.now();
      const bandwidth = toxics.bandwidth;
      const sendAt = bandwidth === null ? chunk.dueAt : Math.max(chunk.dueAt, this.bandwidthFreeAt);
      if (sendAt > now) {
        this.armTimer(sendAt - now);
        break;
      }
      let piece = chunk.data;
      if (bandwidth !== null) {
        const quantum = Math.floor((bandwidth.bytesPerSecond * PACING_QUANTUM_MS) / 1000);
        const maxPiece = Math.min(MAX_PACED_PIECE_BYTES, Math.max(1, quantum));
        piece = chunk.data.subarray(0, maxPiece);
        this.bandwidthFreeAt = Math.max(this.bandwidthFreeAt, now) + (piece.length * 1000) / bandwidth.bytesPerSecond;
      }
      if (piece.length < chunk.data.length) chunk.data = chunk.data.subarray(piece.length);
      else this.shift();
      this.queuedBytes -= piece.length;
      this.write(piece);
    }
  }

  private canWrite(toxics: DirectionToxics): boolean {
    return this.floorAt !== null && this.sinkState === 'writable' && !toxics.isPaused && !this.deps.sink.destroyed;
  }

  private write(piece: Buffer): void {
    this.deps.counters.bytesOut += piece.length;
    this.forwardedBytes += piece.length;
    if (this.deps.sink.write(piece)) return;
    this.sinkState = 'blocked';
    this.deps.sink.once('drain', () => {
      if (this.sinkState !== 'blocked') return;
      this.sinkState = 'writable';
      this.pump();
    });
  }

  private settleEnd(toxics: DirectionToxics): void {
    if (this.head < this.queue.length || this.floorAt === null || this.sinkState === 'ended') return;
    const isEnding = this.sourceState === 'ended' || toxics.isHalfClosed || this.limitState !== 'under';
    if (!isEnding) return;
    if (this.sinkState === 'blocked') return; // end after the drain
    this.sinkState = 'ended';
    if (!this.deps.sink.destroyed) this.deps.sink.end();
    if (this.limitState === 'reached') {
      this.limitState = 'reported';
      this.deps.onLimitReached();
    }
  }

  private updateFlow(toxics: DirectionToxics): void {
    const source = this.deps.source;
    if (this.sourceState === 'ended' || source.destroyed) return;
    const shouldPause =
      this.sinkState === 'blocked' || this.queuedBytes >= this.options.maxBufferedBytes || toxics.isPaused;
    if (shouldPause && !source.isPaused()) source.pause();
    else if (!shouldPause && source.isPaused()) source.resume();
  }

  private shift(): void {
    this.head += 1;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private dropQueue(): void {
    this.deps.counters.bytesDropped += this.queuedBytes;
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
  }

  private armTimer(delayMs: number): void {
    // Timers may fire up to ~1 ms early against performance.now(); pump() re-checks and re-arms.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(1, Math.ceil(delayMs)));
  }

  private clearTimer(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
  }
}
