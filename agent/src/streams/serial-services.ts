/**
 * The agent's serial services together: one SerialPortHub per service and the availability watcher. The
 * agent asks it for the services list to publish (with `available: false` while a device path is missing)
 * and hands `streamDeps` to each stream.
 */
import type { ServiceInfo } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import type { SerialServiceConfig, ServiceConfig } from '../config';
import { SerialAvailability } from './serial-availability';
import { SerialPortHub } from './serial-port-hub';
import type { SerialStreamDeps } from './serial-stream';

export class SerialServices {
  readonly streamDeps: Omit<SerialStreamDeps, 'log'>;
  private readonly hubs = new Map<string, SerialPortHub>();
  private readonly availability: SerialAvailability;

  constructor(
    private readonly deps: { log: Logger },
    services: readonly ServiceConfig[],
    options: { pollMs: number; openTimeoutMs: number },
  ) {
    const serial = services.filter((s): s is SerialServiceConfig => s.type === 'serial');
    for (const s of serial) this.hubs.set(s.name, new SerialPortHub({ log: deps.log }, s, { openTimeoutMs: options.openTimeoutMs }));
    this.availability = new SerialAvailability(serial, { pollMs: options.pollMs });
    this.streamDeps = { hubs: this.hubs, onAvailability: (service, isAvailable) => this.availability.report(service, isAvailable) };
  }

  /** Check every path once, then watch; `onChange` runs after each change (the list to publish changed). */
  async start(onChange: () => void): Promise<void> {
    this.availability.on('change', (service, isAvailable) => {
      this.deps.log.info({ service, isAvailable }, isAvailable ? 'agent.serial.available' : 'agent.serial.unavailable');
      onChange();
    });
    await this.availability.start();
  }

  async stop(): Promise<void> {
    this.availability.stop();
    await Promise.all([...this.hubs.values()].map((hub) => hub.close()));
  }

  /** The services list as published: serial ones say `available: false` while their path is missing. */
  describe(services: readonly ServiceConfig[]): ServiceInfo[] {
    return services.map((s) => (s.type === 'serial' && !this.availability.isAvailable(s.name) ? { name: s.name, type: s.type, available: false } : { name: s.name, type: s.type }));
  }
}
