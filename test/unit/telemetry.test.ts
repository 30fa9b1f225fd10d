/**
 * Telemetry pieces without processes: the Pi throttling decoder and its sources, the collector against a
 * fake thermal class, the payload schema, the relay's TelemetryBook (drops by reason, rate-limited log lines,
 * the device bound) and the CLI's formatting.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { deviceTelemetrySchema, MAX_TELEMETRY_BYTES } from '../../protocol';
import { TelemetryCollector } from '../../agent/src/telemetry/telemetry-collector';
import { decodeThrottled, parseThrottledText, readThrottleState } from '../../agent/src/telemetry/throttle-state';
import { TelemetryBook } from '../../relay/src/control/telemetry-book';
import { ago, formatDeviceTable, size } from '../../client/src/device-report';
import { Disposer, makeTempDir } from '../helpers';

const disposer = new Disposer();
afterEach(() => disposer.run());

describe('throttling state', () => {
  it.each([
    ['0', 0],
    ['0x0', 0],
    ['50005\n', 0x50005],
    ['throttled=0x50005\n', 0x50005],
    ['0x80008', 0x80008],
  ])('parses %j', (text, raw) => expect(parseThrottledText(text)).toBe(raw));

  it.each(['', 'throttled=', 'x', '0x', '123456789', 'throttled=0xZZ', '-1'])('refuses %j', (text) => expect(parseThrottledText(text)).toBeUndefined());

  it('decodes the now and since-boot bits', () => {
    expect(decodeThrottled(0x50005)).toEqual({
      raw: 0x50005,
      underVoltage: true,
      frequencyCapped: false,
      throttled: true,
      softTempLimit: false,
      underVoltageOccurred: true,
      frequencyCappedOccurred: false,
      throttledOccurred: true,
      softTempLimitOccurred: false,
    });
    expect(Object.values(decodeThrottled(0)).filter((v) => v === true)).toEqual([]);
    expect(Object.entries(decodeThrottled(0xf000f)).filter(([, v]) => v === true)).toHaveLength(8);
  });

  it('reads sysfs first, vcgencmd when sysfs is absent, and nothing when neither exists', async () => {
    const dir = await makeTempDir(disposer);
    const sysfs = path.join(dir, 'get_throttled');
    const vcgencmd = path.join(dir, 'vcgencmd');
    await writeFile(vcgencmd, '#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x20002\n');
    await chmod(vcgencmd, 0o755);
    expect(await readThrottleState({ sysfsPath: sysfs, vcgencmd: undefined })).toBeUndefined();
    expect((await readThrottleState({ sysfsPath: sysfs, vcgencmd }))?.raw).toBe(0x20002);
    await writeFile(sysfs, '50000\n');
    expect((await readThrottleState({ sysfsPath: sysfs, vcgencmd }))?.raw).toBe(0x50000);
    await writeFile(sysfs, 'garbage\n');
    expect(await readThrottleState({ sysfsPath: sysfs, vcgencmd })).toBeUndefined();
  });
});

describe('TelemetryCollector', () => {
  it('takes the CPU thermal zone, reads throttling, and produces a sample the schema accepts', async () => {
    const dir = await makeTempDir(disposer);
    for (const [zone, type, temp] of [['thermal_zone0', 'acpitz', '27800'], ['thermal_zone1', 'cpu-thermal', '48312']]) {
      await mkdir(path.join(dir, zone as string));
      await writeFile(path.join(dir, zone as string, 'type'), `${type}\n`);
      await writeFile(path.join(dir, zone as string, 'temp'), `${temp}\n`);
    }
    await writeFile(path.join(dir, 'get_throttled'), '0\n');
    let now = 1_700_000_000_000;
    const collector = new TelemetryCollector({ now: () => now }, { agentVersion: '9.8.7', thermalDir: dir, throttle: { sysfsPath: path.join(dir, 'get_throttled'), vcgencmd: undefined } });
    const first = await collector.collect();
    now += 1_000;
    const second = await collector.collect();
    expect(deviceTelemetrySchema.parse(second)).toEqual(second);
    expect(second.at).toBe(now);
    expect(second.cpu?.temperatureC).toBe(48.3);
    expect(second.throttle?.raw).toBe(0);
    expect(first.agent?.cpuPercent).toBeUndefined();
    expect(second.agent).toMatchObject({ version: '9.8.7', cpuPercent: expect.any(Number) });
    expect(second.memory?.totalBytes).toBe(os.totalmem());
    expect(Buffer.byteLength(JSON.stringify(second))).toBeLessThan(MAX_TELEMETRY_BYTES / 4);
  });

  it('leaves out the temperature without thermal zones and throttling without its sources', async () => {
    const dir = await makeTempDir(disposer);
    const collector = new TelemetryCollector({ now: Date.now }, { agentVersion: '1.0.0', thermalDir: path.join(dir, 'none'), throttle: { sysfsPath: path.join(dir, 'none'), vcgencmd: undefined } });
    const sample = await collector.collect();
    expect(sample.cpu?.temperatureC).toBeUndefined();
    expect(sample.throttle).toBeUndefined();
    expect(JSON.parse(JSON.stringify(sample))).not.toHaveProperty('throttle');
  });
});

describe('TelemetryBook', () => {
  function book(maxDevices = 10): { book: TelemetryBook; lines: Record<string, unknown>[]; clock: { now: number } } {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); cb(); } });
    const clock = { now: 1_000_000 };
    return { book: new TelemetryBook({ log: pino({ level: 'info' }, sink), now: () => clock.now }, { maxDevices }), lines, clock };
  }
  const good = (uptimeS: number): Buffer => Buffer.from(JSON.stringify({ at: 1, uptimeS }));

  it('keeps the latest good sample, drops the rest by reason, logs once per device and reason per minute', async () => {
    const { book: b, lines, clock } = book();
    expect(b.accept('d1', good(5))).toBe(true);
    const garbage = [Buffer.from('{'), Buffer.from('"x"'), Buffer.from('{"at":"1","uptimeS":1}'), Buffer.alloc(MAX_TELEMETRY_BYTES + 1, 0x20), Buffer.from('{'), Buffer.from('[1,2]')];
    for (const g of garbage) expect(b.accept('d1', g)).toBe(false);
    expect(b.get('d1')?.telemetry).toEqual({ at: 1, uptimeS: 5 });
    expect(b.drops).toEqual({ bad_json: 2, invalid: 3, too_large: 1, full: 0 });
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.msg, l.reason, l.droppedSinceLastLog])).toEqual([
      ['relay.telemetry.dropped', 'bad_json', 0],
      ['relay.telemetry.dropped', 'invalid', 0],
      ['relay.telemetry.dropped', 'too_large', 0],
    ]);
    clock.now += 60_000;
    b.accept('d1', Buffer.from('{'));
    await new Promise((r) => setImmediate(r));
    expect(lines.at(-1)).toMatchObject({ reason: 'bad_json', droppedSinceLastLog: 1 });
    expect(b.accept('d1', Buffer.alloc(0))).toBe(false);
    expect(b.get('d1')).toBeUndefined();
  });

  it('holds at most maxDevices', () => {
    const { book: b } = book(2);
    expect([b.accept('a', good(1)), b.accept('b', good(1)), b.accept('c', good(1)), b.accept('a', good(2))]).toEqual([true, true, false, true]);
    expect(b.drops.full).toBe(1);
  });
});

describe('device report', () => {
  it.each([[0, '0s'], [59_999, '59s'], [60_000, '1m'], [3_600_000 + 5 * 60_000, '1h 5m'], [2 * 86_400_000 + 4 * 3_600_000, '2d 4h'], [-5, '0s']])('ago(%d) = %s', (ms, text) => expect(ago(ms)).toBe(text));
  it.each([[512, '512 B'], [1536, '1.5 KiB'], [234 * 1024 ** 2, '234 MiB'], [3.7 * 1024 ** 3, '3.7 GiB']])('size(%d) = %s', (n, text) => expect(size(n)).toBe(text));
  it('prints dashes for devices without telemetry', () => {
    const text = formatDeviceTable([{ id: 'dev_abcdefghijklmnop', name: 'pi9', online: false, services: [], keyFingerprint: '' }], 0);
    expect(text.split('\n')[1]).toMatch(/^pi9\s+dev_abcdefghijklmnop\s+no\s+-\s+-\s+-\s+-$/);
  });
});
