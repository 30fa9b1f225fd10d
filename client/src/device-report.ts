/**
 * Text for `portway devices` (one row per device: online or last seen, uptime, CPU temperature, memory,
 * services) and `portway device show DEVICE` (everything the relay knows, the latest telemetry included).
 * Pure functions of the relay's DeviceView and the current time.
 */
import type { DeviceTelemetry } from '../../protocol';

export interface DeviceView {
  id: string;
  name: string;
  online: boolean;
  services: { name: string; type: string }[];
  keyFingerprint: string;
  version?: string;
  lastSeenAt?: number;
  telemetry?: DeviceTelemetry;
  telemetryReceivedAt?: number;
}

export function formatDeviceTable(devices: readonly DeviceView[], now: number): string {
  const header = ['NAME', 'ID', 'ONLINE', 'UPTIME', 'CPU TEMP', 'MEMORY', 'SERVICES'];
  const rows = [header, ...devices.map((d) => [d.name, d.id, presence(d, now), uptime(d), temperature(d.telemetry), memory(d.telemetry), d.services.map((s) => `${s.name}/${s.type}`).join(',') || '-'])];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatDeviceDetail(d: DeviceView, now: number): string {
  const t = d.telemetry;
  const lines: [string, string][] = [
    ['name', d.name],
    ['id', d.id],
    ['online', presence(d, now)],
    ['agent', d.version ?? t?.agent?.version ?? '-'],
    ['key', d.keyFingerprint],
    ['services', d.services.map((s) => `${s.name}/${s.type}`).join(', ') || '-'],
  ];
  if (!t) {
    lines.push(['telemetry', 'none received']);
  } else {
    lines.push(['telemetry', `${ago(now - (d.telemetryReceivedAt ?? now))} ago`]);
    if (t.os) lines.push(['os', [t.os.distro, t.os.release && `release ${t.os.release}`, `kernel ${t.os.kernel}`, t.os.arch, `host ${t.os.hostname}`].filter(Boolean).join(', ')]);
    lines.push(['uptime', uptime(d)]);
    if (t.cpu) lines.push(['cpu', [t.cpu.cores !== undefined && `${t.cpu.cores} cores`, t.cpu.loadPercent !== undefined && `${t.cpu.loadPercent}% busy`, temperature(t) !== '-' && temperature(t)].filter(Boolean).join(', ') || '-']);
    if (t.loadAverage) lines.push(['load average', t.loadAverage.join(' ')]);
    lines.push(['memory', memory(t)]);
    if (t.rootFs) lines.push(['root fs', `${size(t.rootFs.usedBytes)} used of ${size(t.rootFs.totalBytes)}, ${size(t.rootFs.availableBytes)} free`]);
    for (const n of t.network ?? []) lines.push([`net ${n.name}`, [...n.addresses.map((a) => `${a.address}/${a.prefixLength}`), n.mac && `mac ${n.mac}`].filter(Boolean).join(' ') || '-']);
    if (t.throttle) lines.push(['power', throttle(t.throttle)]);
    if (t.agent) lines.push(['agent process', [t.agent.rssBytes !== undefined && `${size(t.agent.rssBytes)} RSS`, t.agent.cpuPercent !== undefined && `${t.agent.cpuPercent}% CPU`].filter(Boolean).join(', ') || '-']);
  }
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${v}`).join('\n') + '\n';
}

function presence(d: DeviceView, now: number): string {
  if (d.online) return 'yes';
  return d.lastSeenAt === undefined ? 'no' : `no (seen ${ago(now - d.lastSeenAt)} ago)`;
}

function uptime(d: DeviceView): string {
  // as of the latest sample (at most one telemetry interval old while the device is online)
  return d.telemetry ? ago(d.telemetry.uptimeS * 1000) : '-';
}

function temperature(t: DeviceTelemetry | undefined): string {
  return t?.cpu?.temperatureC === undefined ? '-' : `${t.cpu.temperatureC.toFixed(1)}°C`;
}

function memory(t: DeviceTelemetry | undefined): string {
  if (!t?.memory) return '-';
  const pct = t.memory.totalBytes > 0 ? Math.round((t.memory.usedBytes / t.memory.totalBytes) * 100) : 0;
  return `${size(t.memory.usedBytes)}/${size(t.memory.totalBytes)} (${pct}%)`;
}

function throttle(s: NonNullable<DeviceTelemetry['throttle']>): string {
  const now = [s.underVoltage && 'UNDER-VOLTAGE', s.throttled && 'throttled', s.frequencyCapped && 'frequency capped', s.softTempLimit && 'soft temperature limit'].filter(Boolean);
  const past = [s.underVoltageOccurred && 'under-voltage', s.throttledOccurred && 'throttling', s.frequencyCappedOccurred && 'frequency capping', s.softTempLimitOccurred && 'soft temperature limit'].filter(Boolean);
  const hex = `0x${s.raw.toString(16)}`;
  if (now.length === 0 && past.length === 0) return `ok (${hex})`;
  return [now.length > 0 ? `now: ${now.join(', ')}` : 'ok now', past.length > 0 ? `since boot: ${past.join(', ')}` : undefined, hex].filter(Boolean).join('; ');
}

/** 45s, 12m, 3h 5m, 2d 4h. */
export function ago(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** 512 B, 1.5 KiB, 234 MiB, 3.7 GiB. */
export function size(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i] as string}`;
}
