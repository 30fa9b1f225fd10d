/**
 * One telemetry sample of the device and the agent (DeviceTelemetry, protocol/messages.ts).
 *
 * Cost matters on a Pi, so every source is the cheapest that gives the figure, measured on x64
 * (docs/device.md has the numbers): systeminformation's currentLoad() and mem() read /proc in-process, and
 * osInfo() runs once (it spawns helpers) and is cached; they are loaded from their own modules (system-info.ts). Its cpuTemperature(), fsSize(), time() and
 * networkInterfaces() spawn shells (cpuTemperature with execSync, blocking the event loop), so the
 * collector reads the same kernel sources directly instead: the thermal zones in sysfs, statfs(2) of "/",
 * os.uptime() and os.networkInterfaces(). The Pi's throttling state comes from throttle-state.ts.
 */
import { readFile, readdir, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DeviceTelemetry } from '../../../protocol';
import * as si from './system-info';
import { readThrottleState, type ThrottleSource } from './throttle-state';

export interface TelemetryCollectorOptions {
  readonly agentVersion: string;
  readonly throttle: ThrottleSource;
  /** Where thermal zones live (tests point it elsewhere). */
  readonly thermalDir: string;
}

export const THERMAL_DIR = '/sys/class/thermal';
const MAX_INTERFACES = 32;
const MAX_ADDRESSES = 16;

export class TelemetryCollector {
  private osInfo: DeviceTelemetry['os'] | undefined;
  private thermalZone: string | null | undefined;
  private lastCpu: { usage: NodeJS.CpuUsage; at: number } | undefined;

  constructor(
    private readonly deps: { now: () => number },
    private readonly options: TelemetryCollectorOptions,
  ) {}

  async collect(): Promise<DeviceTelemetry> {
    const [load, mem, rootFs, temperatureC, throttle, osInfo] = await Promise.all([
      si.currentLoad().catch(() => undefined),
      si.mem().catch(() => undefined),
      this.rootFs(),
      this.temperature(),
      readThrottleState(this.options.throttle),
      this.staticOsInfo(),
    ]);
    const sample: DeviceTelemetry = {
      at: this.deps.now(),
      uptimeS: Math.round(os.uptime()),
      agent: { version: this.options.agentVersion, rssBytes: process.memoryUsage.rss(), cpuPercent: this.agentCpuPercent() },
      cpu: { cores: os.availableParallelism(), loadPercent: load ? round(clamp(load.currentLoad, 0, 100), 1) : undefined, temperatureC },
      loadAverage: os.loadavg().map((l) => round(l, 2)) as [number, number, number],
      memory: mem ? { totalBytes: mem.total, usedBytes: mem.total - mem.available, availableBytes: mem.available } : undefined,
      rootFs,
      network: networkInterfaces(),
      os: osInfo ? { ...osInfo, hostname: os.hostname().slice(0, 255) } : undefined,
      throttle,
    };
    return sample;
  }

  /** The agent's own CPU use since the previous sample (percent of one core). */
  private agentCpuPercent(): number | undefined {
    const now = this.deps.now();
    const usage = process.cpuUsage();
    const last = this.lastCpu;
    this.lastCpu = { usage, at: now };
    if (!last || now <= last.at) return undefined;
    const usedUs = usage.user - last.usage.user + (usage.system - last.usage.system);
    return round((usedUs / 1000 / (now - last.at)) * 100, 2);
  }

  private async rootFs(): Promise<DeviceTelemetry['rootFs']> {
    try {
      const s = await statfs('/');
      return { totalBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize, availableBytes: s.bavail * s.bsize };
    } catch {
      // statfs unsupported or denied: the field is left out (a deliberate ignore, nothing to report)
      return undefined;
    }
  }

  /** The CPU thermal zone (type mentions cpu, soc or x86_pkg), else the first zone; found once, then read. */
  private async temperature(): Promise<number | undefined> {
    if (this.thermalZone === undefined) this.thermalZone = await findThermalZone(this.options.thermalDir);
    if (this.thermalZone === null) return undefined;
    try {
      const milli = Number((await readFile(path.join(this.thermalZone, 'temp'), 'utf8')).trim());
      return Number.isFinite(milli) && milli > -100_000 && milli < 250_000 ? round(milli / 1000, 1) : undefined;
    } catch {
      // the zone went away or cannot be read now (e.g. a sensor driver error): no temperature this time
      return undefined;
    }
  }

  private async staticOsInfo(): Promise<Omit<NonNullable<DeviceTelemetry['os']>, 'hostname'> | undefined> {
    if (this.osInfo === undefined) {
      const info = await si.osInfo().catch(() => undefined);
      this.osInfo = {
        platform: os.platform(),
        distro: info?.distro ? `${info.distro}${info.codename ? ` (${info.codename})` : ''}`.slice(0, 128) : undefined,
        release: info?.release ? info.release.slice(0, 128) : undefined,
        kernel: os.release().slice(0, 128),
        arch: os.arch(),
        hostname: '',
      };
    }
    const { hostname: _hostname, ...rest } = this.osInfo;
    return rest;
  }
}

async function findThermalZone(dir: string): Promise<string | null> {
  let zones: string[];
  try {
    zones = (await readdir(dir)).filter((d) => d.startsWith('thermal_zone')).sort();
  } catch {
    // no thermal class (VMs, containers): no temperature
    return null;
  }
  let first: string | null = null;
  for (const zone of zones.slice(0, 64)) {
    const type = await readFile(path.join(dir, zone, 'type'), 'utf8').catch(() => '');
    if (first === null) first = path.join(dir, zone);
    if (/cpu|soc|x86_pkg/i.test(type)) return path.join(dir, zone);
  }
  return first;
}

function networkInterfaces(): DeviceTelemetry['network'] {
  const out: NonNullable<DeviceTelemetry['network']> = [];
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    if (!addresses || addresses.every((a) => a.internal) || out.length >= MAX_INTERFACES) continue;
    const mac = addresses[0]?.mac;
    out.push({
      name: name.slice(0, 32),
      mac: mac && mac !== '00:00:00:00:00:00' ? mac : undefined,
      addresses: addresses.slice(0, MAX_ADDRESSES).map((a) => ({ family: a.family, address: a.address, prefixLength: prefixLength(a.cidr) })),
    });
  }
  return out;
}

function prefixLength(cidr: string | null): number {
  const n = Number(cidr?.split('/')[1]);
  return Number.isInteger(n) && n >= 0 && n <= 128 ? n : 0;
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Number.isFinite(n) ? n : lo));
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
