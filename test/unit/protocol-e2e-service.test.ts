/** The service bound into the inner handshake's ALPN list (protocol/e2e-service.ts). */
import { E2E_ALPN_DATAGRAMS, E2E_ALPN_SERIAL_TAP, E2E_ALPN_SERVICE_PREFIX, requestedService, selectInnerAlpn, serviceAlpn } from '../../protocol';

describe('end-to-end service binding', () => {
  it('names the service after a versioned prefix, within the 255-byte ALPN limit', () => {
    expect(serviceAlpn('ssh')).toBe('portway-service/1:ssh');
    expect(serviceAlpn('a'.repeat(63))).toHaveLength(E2E_ALPN_SERVICE_PREFIX.length + 63);
    expect(() => serviceAlpn('')).toThrow(RangeError);
    expect(() => serviceAlpn('x'.repeat(256))).toThrow(RangeError);
  });

  it('reads the requested service: none, one (also when repeated), or conflicting names', () => {
    expect(requestedService([])).toEqual({ kind: 'none' });
    expect(requestedService([E2E_ALPN_DATAGRAMS, 'h2'])).toEqual({ kind: 'none' });
    expect(requestedService([E2E_ALPN_DATAGRAMS, serviceAlpn('dns')])).toEqual({ kind: 'service', name: 'dns' });
    expect(requestedService([serviceAlpn('web'), serviceAlpn('web')])).toEqual({ kind: 'service', name: 'web' });
    expect(requestedService([serviceAlpn('web'), serviceAlpn('ssh')])).toEqual({ kind: 'conflicting' });
    // The bare prefix names the empty service, which no device exposes: it then fails the STREAM_OPEN comparison.
    expect(requestedService([E2E_ALPN_SERVICE_PREFIX])).toEqual({ kind: 'service', name: '' });
  });

  it('selects the transport id when offered, else the service id; nothing known refuses the handshake', () => {
    expect(selectInnerAlpn([serviceAlpn('dns'), E2E_ALPN_DATAGRAMS])).toBe(E2E_ALPN_DATAGRAMS);
    expect(selectInnerAlpn([E2E_ALPN_SERIAL_TAP, serviceAlpn('console')])).toBe(E2E_ALPN_SERIAL_TAP);
    expect(selectInnerAlpn([serviceAlpn('ssh')])).toBe(serviceAlpn('ssh'));
    expect(selectInnerAlpn(['h2', 'http/1.1'])).toBeUndefined();
    expect(selectInnerAlpn([])).toBeUndefined();
  });
});
