/**
 * The relay's spliced streams, by device: how many are open (the per-device stream limit), their byte and
 * buffer totals (metrics), and cutting them when a device or a user's credentials are revoked.
 */
import { dropConnection, type Connection } from '../tls-front';

/** One spliced stream: the forward proxy's connection and the agent's. */
export type StreamPair = readonly [client: Connection, agent: Connection];

export interface LiveStreamStats {
  readonly streamsOpen: number;
  /** Bytes queued in the relay's sockets towards either side, summed over open streams. */
  readonly bufferedBytes: number;
  readonly bytesToDevice: number;
  readonly bytesToClient: number;
  readonly streamsTotal: number;
}

export class LiveStreams {
  private readonly byDevice = new Map<string, Set<StreamPair>>();
  /** Bytes of ended streams; live ones are added at read time (stats()). */
  private readonly ended = { toDevice: 0, toClient: 0 };
  private streamsTotal = 0;

  add(deviceId: string, pair: StreamPair): void {
    const set = this.byDevice.get(deviceId) ?? new Set();
    set.add(pair);
    this.byDevice.set(deviceId, set);
    this.streamsTotal++;
  }

  /** A stream ended: its bytes move from the live sum to the ended one (so the byte counters never go back). */
  remove(deviceId: string, pair: StreamPair): void {
    const set = this.byDevice.get(deviceId);
    if (!set?.delete(pair)) return;
    if (set.size === 0) this.byDevice.delete(deviceId);
    this.ended.toDevice += pair[1].raw.bytesWritten;
    this.ended.toClient += pair[0].raw.bytesWritten;
  }

  countFor(deviceId: string): number {
    return this.byDevice.get(deviceId)?.size ?? 0;
  }

  stats(): LiveStreamStats {
    let streamsOpen = 0;
    let bufferedBytes = 0;
    let { toDevice: bytesToDevice, toClient: bytesToClient } = this.ended;
    for (const pairs of this.byDevice.values()) {
      streamsOpen += pairs.size;
      for (const [client, agent] of pairs) {
        bufferedBytes += client.raw.writableLength + agent.raw.writableLength;
        bytesToDevice += agent.raw.bytesWritten;
        bytesToClient += client.raw.bytesWritten;
      }
    }
    return { streamsOpen, bufferedBytes, bytesToDevice, bytesToClient, streamsTotal: this.streamsTotal };
  }

  /** Reset (RST, both sides) every open stream for which `match` holds; the count. The splices then end them. */
  reset(match: (deviceId: string, client: Connection) => boolean): number {
    let dropped = 0;
    for (const [deviceId, set] of [...this.byDevice]) {
      for (const [client, agent] of [...set]) {
        if (!match(deviceId, client)) continue;
        dropConnection(client, { reset: true });
        dropConnection(agent, { reset: true });
        dropped++;
      }
    }
    return dropped;
  }
}
