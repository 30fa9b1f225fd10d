/**
 * keepPollInterest (agent/src/streams/serial-poll-interest.ts) on a stand-in for serialport's Poller: like the
 * real one, `once(event)` asks `poll(flag)` for that event alone; patched, each request also carries the events
 * still waited for. (test/integration/serial-poll-interest.test.ts runs the real package on a pty pair.)
 */
import { EventEmitter } from 'node:events';
import type { SerialPort } from 'serialport';
import { keepPollInterest } from '../../agent/src/streams/serial-poll-interest';

const FLAG = { readable: 1, writable: 2, disconnect: 4 } as const;

class StandInPoller extends EventEmitter {
  readonly requests: number[] = [];

  poll(flags: number): void {
    this.requests.push(flags);
  }

  override once(event: keyof typeof FLAG, listener: () => void): this {
    this.poll(FLAG[event]);
    return super.once(event, listener);
  }
}

const portWith = (binding: unknown): SerialPort => ({ port: binding }) as unknown as SerialPort;

describe('keepPollInterest', () => {
  it('a wait for one event keeps the other waits in the poll request', () => {
    const poller = new StandInPoller();
    expect(keepPollInterest(portWith({ poller }))).toBe(true);
    poller.once('writable', () => undefined); // a write hit EAGAIN
    poller.once('readable', () => undefined); // then a read did: unpatched, this request would be 1 alone
    expect(poller.requests).toEqual([FLAG.writable, FLAG.readable | FLAG.writable]);
    poller.emit('writable'); // the write goes on; only the read still waits
    poller.once('writable', () => undefined);
    expect(poller.requests.at(-1)).toBe(FLAG.writable | FLAG.readable);
    poller.emit('readable');
    poller.emit('writable');
    poller.once('readable', () => undefined);
    expect(poller.requests.at(-1)).toBe(FLAG.readable);
  });

  it('leaves a port without a poller of that shape alone and says so', () => {
    expect(keepPollInterest(portWith(undefined))).toBe(false);
    expect(keepPollInterest(portWith({}))).toBe(false);
    expect(keepPollInterest(portWith({ poller: { poll: () => undefined } }))).toBe(false);
  });
});
