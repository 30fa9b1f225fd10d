/**
 * Payload schemas (protocol/messages.ts): valid payloads parse (unknown fields stripped, defaults applied);
 * garbage of every shape is refused without throwing.
 */
import {
  agentHelloSchema,
  clientOpenSchema,
  commandEnvelopeSchema,
  commandReplySchema,
  deviceCommandSchema,
  deviceServicesSchema,
  deviceStatusSchema,
  e2eStatusSchema,
  failureSchema,
  idSchema,
  nameSchema,
  relayStatusSchema,
  streamOpenSchema,
} from '../../protocol';
import type * as z from 'zod';

const DEVICE_ID = 'dev_abcdefghijklmnop';
const USER_ID = 'usr_abcdefghijklmnop';
const FP = '0123456789abcdef'.repeat(4);

/** Values no schema here accepts as a whole payload. */
const GARBAGE: unknown[] = [undefined, null, 0, 1, -1, Number.NaN, true, false, '', 'x', '{}', [], [{}], JSON.parse('{"__proto__":{"ok":true,"kind":"pool","online":true}}') as unknown, new Date(0)];

interface SchemaCase {
  readonly name: string;
  readonly schema: z.ZodType;
  readonly valid: readonly { readonly input: unknown; readonly output?: unknown }[];
  readonly invalid: readonly unknown[];
}

const CASES: SchemaCase[] = [
  {
    name: 'CLIENT_OPEN',
    schema: clientOpenSchema,
    valid: [
      { input: { device: 'pi1', service: 'ssh' }, output: { device: 'pi1', service: 'ssh', prime: false } },
      { input: { device: DEVICE_ID, service: 'web-1.a_b', prime: true }, output: { device: DEVICE_ID, service: 'web-1.a_b', prime: true } },
      { input: { device: 'pi1', service: 'ssh', future: 'ignored' }, output: { device: 'pi1', service: 'ssh', prime: false } },
    ],
    invalid: [
      { device: '', service: 'ssh' },
      { device: 'd'.repeat(65), service: 'ssh' },
      { device: 'pi1' },
      { service: 'ssh' },
      { device: 'pi1', service: '' },
      { device: 'pi1', service: '-ssh' },
      { device: 'pi1', service: 'a/b' },
      { device: 'pi1', service: 's'.repeat(64) },
      { device: 'pi1', service: 'ssh', prime: 'yes' },
      { device: 1, service: 'ssh' },
    ],
  },
  {
    name: 'RELAY_STATUS',
    schema: relayStatusSchema,
    valid: [
      { input: { ok: true, streamId: 'abc', deviceId: DEVICE_ID, deviceName: 'pi1', deviceKey: FP } },
      { input: { ok: false, code: 'PW_DEVICE_OFFLINE', message: 'offline' } },
      { input: { ok: false, code: 'PW_SOMETHING_NEWER', message: '' }, output: { ok: false, code: 'PW_SOMETHING_NEWER', message: '' } },
    ],
    invalid: [
      { ok: true },
      { ok: true, streamId: 'abc', deviceId: 'dev_short', deviceName: 'pi1', deviceKey: FP },
      { ok: true, streamId: 'abc', deviceId: DEVICE_ID, deviceName: 'pi1', deviceKey: FP.toUpperCase() },
      { ok: true, streamId: '', deviceId: DEVICE_ID, deviceName: 'pi1', deviceKey: FP },
      { ok: false, code: 'DEVICE_OFFLINE', message: 'x' },
      { ok: false, code: 'PW_device_offline', message: 'x' },
      { ok: false, code: 'PW_DEVICE_OFFLINE', message: 'm'.repeat(513) },
      { ok: false, code: 'PW_DEVICE_OFFLINE' },
      { ok: 'false', code: 'PW_DEVICE_OFFLINE', message: 'x' },
    ],
  },
  {
    name: 'AGENT_HELLO',
    schema: agentHelloSchema,
    valid: [{ input: { kind: 'pool' } }, { input: { kind: 'dial', token: 't'.repeat(43) } }, { input: { kind: 'pool', token: 'ignored-for-pool' }, output: { kind: 'pool' } }],
    invalid: [{ kind: 'dial' }, { kind: 'dial', token: 'short' }, { kind: 'dial', token: 't'.repeat(129) }, { kind: 'other' }, { token: 't'.repeat(43) }],
  },
  {
    name: 'STREAM_OPEN',
    schema: streamOpenSchema,
    // Any service string is read (the agent answers one it does not expose with PW_SERVICE_NOT_EXPOSED), within a bound.
    valid: [{ input: { streamId: 's1', service: 'ssh', user: { id: USER_ID, name: 'alice', certFingerprint: FP } } }, { input: { streamId: 's1', service: '../not a name', user: { id: USER_ID, name: 'alice', certFingerprint: FP } } }],
    invalid: [
      { streamId: 's1', service: 'ssh' },
      { streamId: 's1', service: 'ssh', user: { id: 'alice', name: 'alice', certFingerprint: FP } },
      { streamId: 's1', service: 'ssh', user: { id: USER_ID, name: 'alice', certFingerprint: 'abc' } },
      { streamId: 's1', service: '', user: { id: USER_ID, name: 'alice', certFingerprint: FP } },
      { streamId: 's1', service: 's'.repeat(257), user: { id: USER_ID, name: 'alice', certFingerprint: FP } },
    ],
  },
  {
    name: 'E2E_STATUS',
    schema: e2eStatusSchema,
    valid: [{ input: { ok: true } }, { input: { ok: false, code: 'PW_SERVICE_REFUSED', message: 'refused' } }],
    invalid: [{ ok: false }, { ok: false, code: 'PW_SERVICE_REFUSED' }, { ok: 1 }, { code: 'PW_SERVICE_REFUSED', message: 'x' }],
  },
  {
    name: 'device status (retained, and the will)',
    schema: deviceStatusSchema,
    valid: [{ input: { online: false } }, { input: { online: true, at: 1_700_000_000_000, version: '0.1.0', session: 'a1b2c3' } }, { input: { online: false, session: 'a1b2c3' } }],
    invalid: [{}, { online: 'true' }, { online: true, at: -1 }, { online: true, at: 1.5 }, { online: true, version: 'v'.repeat(65) }],
  },
  {
    name: 'device services (retained)',
    schema: deviceServicesSchema,
    valid: [{ input: { services: [] } }, { input: { services: [{ name: 'ssh', type: 'tcp' }, { name: 'dns', type: 'udp' }, { name: 'console', type: 'serial' }] } }],
    invalid: [{}, { services: {} }, { services: [{ name: 'ssh', type: 'sctp' }] }, { services: [{ name: '', type: 'tcp' }] }, { services: Array.from({ length: 257 }, (_, i) => ({ name: `s${i}`, type: 'tcp' })) }],
  },
  {
    name: 'device command (dial, pool)',
    schema: deviceCommandSchema,
    valid: [
      { input: { type: 'dial', id: 'c1', expiresAt: 1, token: 't'.repeat(43) } },
      { input: { type: 'pool', id: 'c2', expiresAt: 0, size: 2, ttlMs: 120_000 } },
      { input: { type: 'pool', id: 'c3', expiresAt: 5, size: 0, ttlMs: 0 } },
    ],
    invalid: [
      { type: 'dial', id: 'c1', token: 't'.repeat(43) },
      { type: 'dial', id: '', expiresAt: 1, token: 't'.repeat(43) },
      { type: 'dial', id: 'c1', expiresAt: -5, token: 't'.repeat(43) },
      { type: 'dial', id: 'c1', expiresAt: 1, token: 'short' },
      { type: 'pool', id: 'c2', expiresAt: 0, size: 17, ttlMs: 1 },
      { type: 'pool', id: 'c2', expiresAt: 0, size: 1, ttlMs: 3_600_001 },
      { type: 'reboot', id: 'c9', expiresAt: 1 },
    ],
  },
  {
    name: 'command envelope (to answer unknown types)',
    schema: commandEnvelopeSchema,
    valid: [{ input: { type: 'reboot', id: 'c9', expiresAt: 1, extra: true }, output: { type: 'reboot', id: 'c9', expiresAt: 1 } }],
    invalid: [{ type: 'reboot', expiresAt: 1 }, { id: 'c9', expiresAt: 1 }, { type: 't'.repeat(65), id: 'c9', expiresAt: 1 }],
  },
  {
    name: 'command reply',
    schema: commandReplySchema,
    valid: [{ input: { id: 'c1', ok: true } }, { input: { id: 'c9', ok: false, code: 'PW_UNKNOWN_MESSAGE', message: 'unknown command reboot' } }],
    invalid: [{ ok: true }, { id: 'c1' }, { id: 'c1', ok: false, code: 'nope', message: 'x' }, { id: 'c1', ok: false, message: 'x' }],
  },
];

describe('message schemas', () => {
  for (const c of CASES) {
    describe(c.name, () => {
      it('accepts valid payloads, strips unknown fields, applies defaults', () => {
        for (const { input, output } of c.valid) {
          const result = c.schema.safeParse(input);
          expect({ input, success: result.success }).toEqual({ input, success: true });
          expect(result.data).toEqual(output ?? input);
        }
      });

      it('refuses invalid payloads', () => {
        for (const input of c.invalid) expect({ input, success: c.schema.safeParse(input).success }).toEqual({ input, success: false });
      });

      it('refuses garbage of every JSON shape without throwing', () => {
        for (const input of GARBAGE) expect({ input, success: c.schema.safeParse(input).success }).toEqual({ input, success: false });
      });

      it('survives parsed JSON from random bytes', () => {
        let seed = 7;
        const random = (): number => {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          return seed / 2 ** 31;
        };
        for (let i = 0; i < 300; i++) {
          const text = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 40) }, () => Math.floor(random() * 256))).toString('latin1');
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch {
            value = text;
          }
          expect(() => c.schema.safeParse(value)).not.toThrow();
        }
      });
    });
  }
});

describe('shared field schemas', () => {
  it.each(['a', 'pi1', 'web-1', 'A.b_c-d', 'x'.repeat(63), '0abc'])('name %p is valid', (name) => {
    expect(nameSchema.safeParse(name).success).toBe(true);
  });

  it.each(['', '-a', '.a', '_a', 'a b', 'a/b', 'a+b', 'a#b', 'x'.repeat(64), 'ü'])('name %p is refused', (name) => {
    expect(nameSchema.safeParse(name).success).toBe(false);
  });

  it.each([DEVICE_ID, USER_ID, 'key_234567abcdefghij'])('ID %p is valid', (id) => {
    expect(idSchema.safeParse(id).success).toBe(true);
  });

  it.each(['dev_ABCDEFGHIJKLMNOP', 'dev_abc', 'dev_abcdefghijklmno1', 'de_abcdefghijklmnop', 'dev-abcdefghijklmnop', `${DEVICE_ID}/x`])('ID %p is refused', (id) => {
    expect(idSchema.safeParse(id).success).toBe(false);
  });

  it('failure messages are bounded at 512 characters', () => {
    expect(failureSchema.safeParse({ ok: false, code: 'PW_INTERNAL', message: 'm'.repeat(512) }).success).toBe(true);
    expect(failureSchema.safeParse({ ok: false, code: 'PW_INTERNAL', message: 'm'.repeat(513) }).success).toBe(false);
  });
});
