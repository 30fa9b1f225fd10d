/**
 * `-L [ADDR:]PORT` of `portway connect` (TCP and --udp): the local address the forward proxy listens on.
 */
import { parseListen } from '../../client/src/commands';

describe('parseListen (-L [ADDR:]PORT)', () => {
  it('defaults to 127.0.0.1 and a free port; a bare port listens on 127.0.0.1', () => {
    expect(parseListen(undefined)).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('5353')).toEqual({ host: '127.0.0.1', port: 5353 });
  });

  it('takes an address, IPv6 in brackets', () => {
    expect(parseListen('0.0.0.0:53')).toEqual({ host: '0.0.0.0', port: 53 });
    expect(parseListen('localhost:7000')).toEqual({ host: 'localhost', port: 7000 });
    expect(parseListen('[::1]:5353')).toEqual({ host: '::1', port: 5353 });
  });

  it.each(['', 'dns', '70000', ':53', '127.0.0.1:', '::1:53', '127.0.0.1:53:1', '1.2.3.4:123456'])('refuses %j with PW_BAD_REQUEST', (spec) => {
    expect(() => parseListen(spec)).toThrow(expect.objectContaining({ code: 'PW_BAD_REQUEST' }));
  });
});
