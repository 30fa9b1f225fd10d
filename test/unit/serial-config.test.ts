/** Serial services in the agent config (agent/src/config.ts): defaults, the example, bad input. */
import { parseAgentConfig } from '../../agent/src/config';
import { PortwayError } from '../../protocol';

const BASE = { relay: 'relay.example.com:443', caFingerprint: 'ab'.repeat(32), stateDir: '/var/lib/portway', name: 'pi1' };

function configError(services: unknown[]): string {
  try {
    parseAgentConfig({ ...BASE, services });
  } catch (err) {
    expect(err).toBeInstanceOf(PortwayError);
    expect((err as PortwayError).code).toBe('PW_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}

describe('serial services in the agent config', () => {
  it('accepts the documented example and fills defaults', () => {
    const example = { name: 'console', type: 'serial', path: '/dev/ttyUSB0', baudRate: 115200, dataBits: 8, parity: 'none', stopBits: 1, rtscts: false, mode: 'rfc2217' };
    expect(parseAgentConfig({ ...BASE, services: [example] }).services[0]).toEqual({ ...example, maxTaps: 0, lingerMs: 500 });
    expect(parseAgentConfig({ ...BASE, services: [{ name: 'c', type: 'serial', path: '/dev/ttyAMA0' }] }).services[0]).toEqual({
      name: 'c',
      type: 'serial',
      path: '/dev/ttyAMA0',
      baudRate: 115200,
      dataBits: 8,
      parity: 'none',
      stopBits: 1,
      rtscts: false,
      mode: 'raw',
      maxTaps: 0,
      lingerMs: 500,
    });
  });

  it.each([
    ['a relative path', { path: 'ttyUSB0' }, 'services.0.path: must be an absolute path'],
    ['no path', { path: undefined }, 'services.0.path:'],
    ['9 data bits', { dataBits: 9 }, 'services.0.dataBits:'],
    ['mark parity', { parity: 'mark' }, 'services.0.parity:'],
    ['1.5 stop bits', { stopBits: 1.5 }, 'services.0.stopBits:'],
    ['an unknown mode', { mode: 'telnet' }, 'services.0.mode:'],
    ['a zero baud rate', { baudRate: 0 }, 'services.0.baudRate:'],
    ['too many taps', { maxTaps: 17 }, 'services.0.maxTaps:'],
    ['an unknown key', { baud: 9600 }, 'baud'],
    ['a target (tcp key)', { target: '127.0.0.1:1' }, 'target'],
  ])('refuses %s with its key path', (_name, patch, message) => {
    expect(configError([{ name: 'console', type: 'serial', path: '/dev/ttyUSB0', ...patch }])).toContain(message);
  });

  it('reports every problem at once', () => {
    const text = configError([{ name: 'console', type: 'serial', path: 'x', dataBits: 4, parity: 'space' }]);
    expect(text).toContain('services.0.path');
    expect(text).toContain('services.0.dataBits');
    expect(text).toContain('services.0.parity');
  });
});
