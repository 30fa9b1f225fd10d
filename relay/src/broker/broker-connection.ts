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
  /** Shared by every connection of a broker. */
  readonly onClose: (connection: BrokerConnection) => void;
}

/**
 * Kept for as long as the session lives (thousands of idle devices), so it holds no per-connection logger,
 * closures or timers beyond what it needs: the logger child is made when a line is logged, the listeners
 * are methods bound once, and the CONNECT deadline ends with the CONNECT.
 */
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
  private readonly onStreamError = (err: Error): void => this.log.debug({ err }, 'broker.connection.stream_error');
  private readonly onStreamClose = (): void => this.closed();
  private readonly onStreamData = (chunk: Buffer): void => this.inspect(chunk);

  constructor(
    readonly stream: Duplex,
    readonly identity: BrokerIdentity,
    /** The broker's logger; `log` adds this connection's bindings. */
    private readonly brokerLog: Logger,
    private readonly options: BrokerConnectionOptions,
  ) {
    this.guard = options.limits ? new PacketSizeGuard(options.limits) : undefined;
    stream.on('error', this.onStreamError);
    stream.on('close', this.onStreamClose);
    this.connectTimer = setTimeout(() => this.abort('connect_timeout'), options.connectTimeoutMs);
  }

  /** A logger bound to this connection (deviceId, or peer=relay); made per use, since lines are few. */
  get log(): Logger {
    return this.brokerLog.child(connectionBindings(this.identity));
  }

  get aedesClient(): AedesClient | undefined {
    return this.client;
  }

  /** Start watching inbound bytes; call after aedes took the stream, so its paused reads stay in charge. */
  attachClient(client: AedesClient): void {
    this.client = client;
    // With aedes' 'readable' listener present, a 'data' listener does not switch the stream to flowing
    // mode; it sees each chunk as aedes reads it, before aedes parses it.
    if (this.guard) this.stream.on('data', this.onStreamData);
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

  private inspect(chunk: Buffer): void {
    const verdict = (this.guard as PacketSizeGuard).push(chunk);
    if (verdict === 'ok') return;
    this.log.warn({ verdict, isAuthenticated: this.clientId !== undefined }, 'broker.packet.rejected');
    this.abort(verdict === 'too_large' ? 'too_large' : 'protocol_error');
  }

  private closed(): void {
    this.clearConnectTimer();
    this.stream.off('data', this.onStreamData);
    this.stream.off('close', this.onStreamClose);
    this.stream.off('error', this.onStreamError);
    // A late 'error' after our listener is gone must not become an uncaught exception.
    this.stream.on('error', (err: Error) => this.log.trace({ err }, 'broker.connection.late_error'));
    this.options.onClose(this);
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
  }
}

/** The log bindings of a connection with `identity`. */
export function connectionBindings(identity: BrokerIdentity): Record<string, string> {
  return identity.kind === 'device' ? { deviceId: identity.deviceId } : { peer: 'relay' };
}
