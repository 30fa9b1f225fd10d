/**
 * One serial service's port on the device: opened (serialport, with its flock) when the first stream takes a
 * lease and closed after the last one gives it back, so the port is free for other programs while nobody
 * uses it. One writer at a time (a second gets PW_SERIAL_BUSY), up to `maxTaps` read-only taps
 * (PW_LIMIT_REACHED beyond). The port's bytes go to every lease; the writer's backpressure pauses the port,
 * taps cannot (their link drops what they cannot take). Line settings start from the service's config each
 * time the port opens; the writer may change them (RFC 2217): a baud rate in place, data bits, parity, stop
 * bits and flow control by reopening the port with the new settings. If the port fails or its device
 * disappears, every lease is told (`lost`) and the hub is closed until the next stream.
 */
import { constants as fsConstants, promises as fs } from 'node:fs';
import { SerialPort } from 'serialport';
import { MODEMSTATE, PortwayError, type LineState } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import type { SerialServiceConfig } from '../config';
import { closeQuietly, portError } from './serial-port-errors';
import { keepPollInterest } from './serial-poll-interest';

export type SerialRole = 'writer' | 'tap';

export interface SerialSubscriber {
  /** Bytes the port received. */
  deliver(chunk: Buffer): void;
  /** The port is gone (unplugged, failed); the subscriber ends its stream with `error`. */
  lost(error: PortwayError): void;
}

/** What the agent answers for modem inputs on a port without modem lines (a pty): a peer that is always ready. */
export const MODEMSTATE_WITHOUT_LINES = MODEMSTATE.CTS | MODEMSTATE.DSR | MODEMSTATE.CD;

export class SerialLease {
  subscriber: SerialSubscriber | undefined;
  private isReleased = false;

  constructor(
    private readonly hub: SerialPortHub,
    readonly role: SerialRole,
  ) {}

  get line(): LineState {
    return this.hub.line;
  }

  write(data: Buffer): Promise<void> {
    return this.hub.write(data);
  }

  drain(): Promise<void> {
    return this.hub.drain();
  }

  pause(): void {
    this.hub.setPaused(this, true);
  }

  resume(): void {
    this.hub.setPaused(this, false);
  }

  applyLine(change: Partial<LineState>): Promise<void> {
    return this.hub.applyLine(change);
  }

  modemState(): Promise<number> {
    return this.hub.modemState();
  }

  purge(): Promise<void> {
    return this.hub.purge();
  }

  release(): void {
    if (this.isReleased) return;
    this.isReleased = true;
    this.hub.release(this);
  }
}

export class SerialPortHub {
  private port: SerialPort | undefined;
  private opening: Promise<SerialPort> | undefined;
  private closing: Promise<void> | undefined;
  private writer: SerialLease | undefined;
  private readonly taps = new Set<SerialLease>();
  private readonly pausedBy = new Set<SerialLease>();
  private current: LineState;
  private hasModemLines = true;

  constructor(
    private readonly deps: { log: Logger },
    private readonly service: SerialServiceConfig,
    private readonly options: { openTimeoutMs: number },
  ) {
    this.current = this.configured();
  }

  get line(): LineState {
    return this.current;
  }

  /** Take the writer slot or a tap slot and make sure the port is open; throws a coded PortwayError. */
  async acquire(role: SerialRole): Promise<SerialLease> {
    const name = this.service.name;
    if (role === 'writer' && this.writer) throw new PortwayError('PW_SERIAL_BUSY', `serial service ${name} is in use by another stream (one writer at a time; a read-only tap may join)`);
    if (role === 'tap' && this.taps.size >= this.service.maxTaps) {
      throw new PortwayError('PW_LIMIT_REACHED', this.service.maxTaps === 0 ? `serial service ${name} allows no read-only taps (maxTaps is 0)` : `serial service ${name} already has ${this.service.maxTaps} read-only taps`);
    }
    const lease = new SerialLease(this, role);
    if (role === 'writer') this.writer = lease;
    else this.taps.add(lease);
    try {
      await this.openPort();
    } catch (err) {
      this.forget(lease);
      throw err;
    }
    return lease;
  }

  /** Close the port now (agent stopping); leases are told it is gone. */
  close(): Promise<void> {
    this.loseAll(new PortwayError('PW_SHUTTING_DOWN', 'the agent is stopping'));
    return this.closePort();
  }

  release(lease: SerialLease): void {
    this.forget(lease);
    if (!this.writer && this.taps.size === 0) void this.closePort();
  }

  setPaused(lease: SerialLease, isPaused: boolean): void {
    if (isPaused) this.pausedBy.add(lease);
    else this.pausedBy.delete(lease);
    if (this.pausedBy.size > 0) this.port?.pause();
    else this.port?.resume();
  }

  async write(data: Buffer): Promise<void> {
    const port = await this.openPort();
    await new Promise<void>((resolve, reject) => port.write(data, (err) => (err ? reject(portError(this.service.path, err)) : resolve())));
  }

  async drain(): Promise<void> {
    const port = await this.openPort();
    await new Promise<void>((resolve, reject) => port.drain((err) => (err ? reject(portError(this.service.path, err)) : resolve())));
  }

  async purge(): Promise<void> {
    const port = await this.openPort();
    await new Promise<void>((resolve) => port.flush(() => resolve()));
  }

  /** Apply new line settings: baud rate in place, termios framing by reopening, lines with TIOCMSET. */
  async applyLine(change: Partial<LineState>): Promise<void> {
    const next = { ...this.current, ...change };
    const port = await this.openPort();
    if (next.dataBits !== this.current.dataBits || next.parity !== this.current.parity || next.stopBits !== this.current.stopBits || next.flow !== this.current.flow) {
      await this.reopen(next);
      return;
    }
    if (next.baudRate !== this.current.baudRate) {
      await new Promise<void>((resolve, reject) => port.update({ baudRate: next.baudRate }, (err) => (err ? reject(portError(this.service.path, err)) : resolve())));
      this.current = { ...this.current, baudRate: next.baudRate };
    }
    if (next.dtr !== this.current.dtr || next.rts !== this.current.rts || next.brk !== this.current.brk) {
      // A pty has no modem lines (ENOTTY): the request is remembered and answered as if applied.
      if (this.hasModemLines) {
        await new Promise<void>((resolve) =>
          port.set({ dtr: next.dtr, rts: next.rts, brk: next.brk }, (err) => {
            if (err) {
              this.hasModemLines = false;
              this.deps.log.info({ service: this.service.name, reason: err.message }, 'agent.serial.no_modem_lines');
            }
            resolve();
          }),
        );
      }
      this.current = { ...this.current, dtr: next.dtr, rts: next.rts, brk: next.brk };
    }
  }

  async modemState(): Promise<number> {
    const port = await this.openPort();
    if (!this.hasModemLines) return MODEMSTATE_WITHOUT_LINES;
    return new Promise<number>((resolve) =>
      port.get((err, status) => {
        if (err || !status) {
          this.hasModemLines = false;
          resolve(MODEMSTATE_WITHOUT_LINES);
          return;
        }
        resolve((status.cts ? MODEMSTATE.CTS : 0) | (status.dsr ? MODEMSTATE.DSR : 0) | (status.dcd ? MODEMSTATE.CD : 0));
      }),
    );
  }

  private configured(): LineState {
    const s = this.service;
    return { baudRate: s.baudRate, dataBits: s.dataBits, parity: s.parity, stopBits: s.stopBits, flow: s.rtscts ? 'rtscts' : 'none', dtr: true, rts: true, brk: false };
  }

  private forget(lease: SerialLease): void {
    if (this.writer === lease) this.writer = undefined;
    this.taps.delete(lease);
    if (this.pausedBy.delete(lease) && this.pausedBy.size === 0) this.port?.resume();
  }

  /** The open port, opening it when needed (after a close in progress has finished). */
  private async openPort(): Promise<SerialPort> {
    if (this.closing) await this.closing;
    if (this.port) return this.port;
    this.opening ??= this.open(this.current).finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  /** Close and open again with `next`; writes meanwhile wait for the new port (same `opening` promise). */
  private async reopen(next: LineState): Promise<void> {
    const old = this.port;
    this.port = undefined;
    this.current = next;
    this.opening = (async () => {
      if (old) await closeQuietly(old);
      return this.open(next);
    })().finally(() => {
      this.opening = undefined;
    });
    await this.opening;
  }

  private async open(line: LineState): Promise<SerialPort> {
    const { path } = this.service;
    try {
      await fs.access(path, fsConstants.R_OK | fsConstants.W_OK);
    } catch (err) {
      throw portError(path, err as NodeJS.ErrnoException);
    }
    const port = new SerialPort({
      path,
      baudRate: line.baudRate,
      dataBits: line.dataBits,
      parity: line.parity,
      stopBits: line.stopBits,
      rtscts: line.flow === 'rtscts',
      xon: line.flow === 'xonxoff',
      xoff: line.flow === 'xonxoff',
      autoOpen: false,
      lock: true,
    });
    port.on('error', () => {
      // Failures surface through the open callback, writes, or the 'close' below.
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new PortwayError('PW_SERVICE_UNREACHABLE', `serial device ${path} did not open within ${this.options.openTimeoutMs} ms`));
        port.once('open', () => void closeQuietly(port));
      }, this.options.openTimeoutMs);
      port.open((err) => {
        clearTimeout(timer);
        if (err) reject(portError(path, err));
        else resolve();
      });
    });
    // Without this a port that sends and receives at once can stall for good (serial-poll-interest.ts).
    if (!keepPollInterest(port)) this.deps.log.warn({ service: this.service.name, path }, 'agent.serial.poll_interest_unpatched');
    port.on('data', (chunk: Buffer) => {
      this.writer?.subscriber?.deliver(chunk);
      for (const tap of this.taps) tap.subscriber?.deliver(chunk);
    });
    port.once('close', (err?: Error | null) => {
      if (this.port !== port) return; // closed on purpose (release or reopen)
      this.port = undefined;
      this.current = this.configured();
      this.deps.log.warn({ service: this.service.name, path, reason: err?.message ?? 'closed' }, 'agent.serial.port_lost');
      this.loseAll(new PortwayError('PW_SERVICE_UNAVAILABLE', `serial device ${path} went away${err ? ` (${err.message})` : ''}`));
    });
    if (this.pausedBy.size > 0) port.pause();
    this.port = port;
    this.deps.log.debug({ service: this.service.name, path, baudRate: line.baudRate }, 'agent.serial.port_opened');
    return port;
  }

  private loseAll(error: PortwayError): void {
    const leases = [...(this.writer ? [this.writer] : []), ...this.taps];
    this.writer = undefined;
    this.taps.clear();
    this.pausedBy.clear();
    for (const lease of leases) lease.subscriber?.lost(error);
  }

  private async closePort(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined);
    const port = this.port;
    if (!port) return;
    if (this.writer || this.taps.size > 0) return; // a new lease arrived meanwhile
    this.port = undefined;
    this.current = this.configured();
    this.closing = closeQuietly(port).finally(() => {
      this.closing = undefined;
    });
    await this.closing;
  }
}
