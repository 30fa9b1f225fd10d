/**
 * Connections per device whose CONNECT has not been accepted yet, capped. Without it, quiet connections made
 * with one device certificate (a stolen or cloned one) fill the broker's room for pending connections
 * (maxPendingConnections) until their CONNECT deadline, and every other device reconnecting meanwhile is
 * refused. With it, such a certificate can hold up only its own device. A real agent has at most one or two
 * pending (a reconnect racing the old session's teardown).
 */
export class PendingPerDevice {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('maxPendingPerDevice must be a positive integer');
  }

  /** Count one more pending connection of `deviceId`; false (nothing counted) when it already has `max`. */
  tryAdd(deviceId: string): boolean {
    const count = this.counts.get(deviceId) ?? 0;
    if (count >= this.max) return false;
    this.counts.set(deviceId, count + 1);
    return true;
  }

  /** One pending connection of `deviceId` was accepted or closed. */
  remove(deviceId: string): void {
    const count = this.counts.get(deviceId) ?? 0;
    if (count <= 1) this.counts.delete(deviceId);
    else this.counts.set(deviceId, count - 1);
  }

  /** Devices with a pending connection (for tests and metrics). */
  get devices(): number {
    return this.counts.size;
  }
}
