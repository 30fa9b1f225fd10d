/**
 * One connection handed to the embedded broker: its identity (established before MQTT, by TLS or by being
 * the relay's own in-process client), its lifecycle state, the deadline for its CONNECT and the inbound
 * size guard. aedes owns the MQTT session on the stream; this object only watches and bounds it.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { AedesClient } from './aedes-adapter';
import type { BrokerIdentity } from './broker-acl';
import { PacketSizeGuard } from './packet-size-guard';

export type ConnectionState = 'connecting' | 'connected' | 'closed';

export type DisconnectReason =
  | 'closed'
  | 'replaced'
  | 'refused'
  | 'protocol_error'
  | 'too_large'
  | 'connect_timeout'
  | 'keepalive_timeout'
  | 'stopped'
  | 'revoked';

export interface BrokerConnectionOptions {
  readonly connectTimeoutMs: number;
  /** Undefined for the relay's own in-process client, whose packets are not size-checked. */
  readonly limits: { readonly maxPacketBytes: number; readonly maxPreAuthBytes: number } | undefined;
  readonly onClose: (connection: BrokerConnection) => void;
}

export class BrokerConnection {
  state: ConnectionState = 'connecting';
  /** Set once the CONNECT was accepted. */
  clientId: string | undefined;
  /** The first known cause of the end; later causes do not overwrite it. */
  closeReason: DisconnectReason | undefined;
  deniedPublishes = 0;
  deniedSubscribes = 0;
  private client: AedesClient | undefined;
  private readonly guard: PacketSizeGuard | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private readonly disposers: Array<() => void> = [];

  constructor(
    readonly stream: Duplex,
    readonly identity: BrokerIdentity,
    readonly log: Logger,
    private readonly options: BrokerConnectionOptions,
  ) {
    this.guard = options.limits ? new PacketSizeGuard(options.limits) : undefined;
    this.listen('error', (err: Error) => this.log.debug({ err }, 'broker.connection.stream_error'));
    this.listen('close', () => this.onStreamClose());
    this.connectTimer = setTimeout(() => this.abort('connect_timeout'), options.connectTimeoutMs);
  }

  get aedesClient(): AedesClient | undefined {
    return this.client;
  }

  /** Start watching inbound bytes; call after aedes took the stream, so its paused reads stay in charge. */
  attachClient(client: AedesClient): void {
    this.client = client;
    const guard = this.guard;
    if (!guard) return;
    // With aedes' 'readable' listener present, a 'data' listener does not switch the stream to flowing
    // mode; it sees each chunk as aedes reads it, before aedes parses it.
    this.listen('data', (chunk: Buffer) => {
      const verdict = guard.push(chunk);
      if (verdict === 'ok') return;
      this.log.warn({ verdict, isAuthenticated: this.clientId !== undefined }, 'broker.packet.rejected');
      this.abort(verdict === 'too_large' ? 'too_large' : 'protocol_error');
    });
  }

  /** The CONNECT was accepted: lift the pre-authentication limits. */
  markAuthenticated(clientId: string): void {
    this.clientId = clientId;
    this.guard?.markAuthenticated();
    this.clearConnectTimer();
  }

  noteReason(reason: DisconnectReason): void {
    this.closeReason ??= reason;
  }

  /** End the connection now; aedes notices the closed stream and ends the session (publishing its will). */
  abort(reason: DisconnectReason): void {
    this.noteReason(reason);
    this.clearConnectTimer();
    if (!this.stream.destroyed) this.stream.destroy();
  }

  private onStreamClose(): void {
    this.clearConnectTimer();
    for (const dispose of this.disposers.splice(0).reverse()) dispose();
    // A late 'error' after our listener is gone must not become an uncaught exception.
    this.stream.on('error', (err: Error) => this.log.trace({ err }, 'broker.connection.late_error'));
    this.options.onClose(this);
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
  }

  private listen(event: 'error' | 'close' | 'data', listener: (...args: never[]) => void): void {
    const fn = listener as (...args: unknown[]) => void;
    this.stream.on(event, fn);
    this.disposers.push(() => this.stream.off(event, fn));
  }
}
