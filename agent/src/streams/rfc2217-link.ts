/**
 * The writer's link for a serial service in mode `rfc2217`: a Telnet stream with the COM-PORT-OPTION
 * (protocol/telnet-codec.ts, protocol/rfc2217.ts) on the peer's side, the port on the other.
 *
 * - Port bytes go to the peer with 0xFF doubled.
 * - The peer's bytes are decoded in order: data goes to the port, negotiation is answered, COM-PORT-OPTION
 *   requests are applied to the port and answered with the value in effect afterwards. Everything is
 *   handled in arrival order, one write at a time, so bytes after a SET-BAUDRATE leave at the new rate and
 *   the peer's writes wait (backpressure) while the port is reconfigured.
 * - Malformed Telnet costs only that command: `onInvalid(reason)` is called (the stream logs it with
 *   PW_TELNET_INVALID) and decoding goes on. FLOWCONTROL-SUSPEND pauses the port's bytes toward the peer.
 */
import {
  COM_PORT,
  controlReply,
  encodeComPort,
  encodeLineReply,
  escapeIac,
  LINESTATE_IDLE,
  parseComPortRequest,
  SERVER_OFFSET,
  TELNET_OPTION,
  TelnetDecoder,
  TelnetNegotiation,
  type TelnetEvent,
} from '../../../protocol';
import type { SerialLease } from './serial-port-hub';
import { SerialLink, type SerialLinkOptions } from './serial-link';

export class Rfc2217Link extends SerialLink {
  /** Telnet or COM-PORT-OPTION input that was malformed and ignored. */
  invalidCount = 0;
  private readonly decoder = new TelnetDecoder();
  private readonly negotiation = new TelnetNegotiation();
  private hasGreetedComPort = false;
  private isSuspended = false;

  constructor(
    lease: SerialLease,
    options: SerialLinkOptions,
    private readonly onInvalid: (reason: string) => void,
  ) {
    super(lease, options);
    this.push(this.negotiation.start());
  }

  protected override encodeForPeer(chunk: Buffer): Buffer {
    return escapeIac(chunk);
  }

  override _read(): void {
    if (!this.isSuspended) super._read();
  }

  protected override async fromPeer(chunk: Buffer): Promise<void> {
    const events: TelnetEvent[] = [];
    this.decoder.push(chunk, (event) => events.push(event));
    let data: Buffer[] = [];
    for (const event of events) {
      if (event.kind === 'data') {
        data.push(event.data);
        continue;
      }
      if (data.length > 0) {
        await this.lease.write(data.length === 1 ? (data[0] as Buffer) : Buffer.concat(data));
        data = [];
      }
      await this.handle(event);
    }
    if (data.length > 0) await this.lease.write(data.length === 1 ? (data[0] as Buffer) : Buffer.concat(data));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.decoder.end((event) => {
      if (event.kind === 'error') this.invalid(event.reason);
    });
    super._final(callback);
  }

  private async handle(event: Exclude<TelnetEvent, { kind: 'data' }>): Promise<void> {
    if (event.kind === 'error') {
      this.invalid(event.reason);
    } else if (event.kind === 'negotiate') {
      const { reply, enabled } = this.negotiation.receive(event.verb, event.option);
      if (reply) this.push(reply);
      if (enabled && event.option === TELNET_OPTION.COM_PORT && !this.hasGreetedComPort) {
        // The client speaks RFC 2217: tell it the modem state once, as a server does on accepting it.
        this.hasGreetedComPort = true;
        this.push(encodeComPort(COM_PORT.NOTIFY_MODEMSTATE + SERVER_OFFSET, Buffer.from([await this.lease.modemState()])));
      }
    } else if (event.kind === 'subnegotiation') {
      if (event.option !== TELNET_OPTION.COM_PORT) this.invalid(`subnegotiation of option ${event.option}, which was not negotiated`);
      else await this.comPort(event.payload);
    }
    // Commands without option (NOP, AYT, BRK, ...) carry nothing for a serial port: ignored.
  }

  private async comPort(payload: Buffer): Promise<void> {
    const request = parseComPortRequest(payload);
    switch (request.kind) {
      case 'bad':
        this.invalid(request.reason);
        return;
      case 'line':
        if (request.bad) this.invalid(request.bad);
        if (request.change) await this.apply(request.change, `line settings ${JSON.stringify(request.change)}`);
        this.push(encodeLineReply(request.command, this.lease.line));
        return;
      case 'control':
        if (request.bad) this.invalid(request.bad);
        if (request.change) await this.apply(request.change, `control ${request.value}`);
        this.push(encodeComPort(COM_PORT.SET_CONTROL + SERVER_OFFSET, Buffer.from([controlReply(request.value, this.lease.line)])));
        return;
      case 'notify-linestate':
        this.push(encodeComPort(COM_PORT.NOTIFY_LINESTATE + SERVER_OFFSET, Buffer.from([LINESTATE_IDLE])));
        return;
      case 'notify-modemstate':
        this.push(encodeComPort(COM_PORT.NOTIFY_MODEMSTATE + SERVER_OFFSET, Buffer.from([await this.lease.modemState()])));
        return;
      case 'flow-suspend':
        this.isSuspended = true;
        this.lease.pause();
        return;
      case 'flow-resume':
        this.isSuspended = false;
        this.lease.resume();
        return;
      case 'mask':
        this.push(encodeComPort(request.command + SERVER_OFFSET, Buffer.from([request.mask])));
        return;
      case 'purge':
        await this.lease.purge();
        this.push(encodeComPort(COM_PORT.PURGE_DATA + SERVER_OFFSET, Buffer.from([request.value])));
        return;
    }
  }

  /** Apply a change; a setting the port refuses (e.g. a baud rate the driver rejects) is answered unchanged. */
  private async apply(change: Parameters<SerialLease['applyLine']>[0], what: string): Promise<void> {
    try {
      await this.lease.applyLine(change);
    } catch (err) {
      const code = (err as { code?: string }).code;
      // The port went away while reconfiguring: that ends the stream; anything else is a refused value.
      if (code === 'PW_SERVICE_UNAVAILABLE' || code === 'PW_SERIAL_BUSY') throw err;
      this.invalid(`the port refused ${what}: ${(err as Error).message}`);
    }
  }

  private invalid(reason: string): void {
    this.invalidCount++;
    this.onInvalid(reason);
  }
}
