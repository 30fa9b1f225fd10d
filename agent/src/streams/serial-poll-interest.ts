/**
 * A workaround for a lost wakeup in @serialport/bindings-cpp (13.0.0; upstream's poller.cpp is unchanged):
 * its Poller remembers every event it was asked for but starts libuv's poll with only the one just asked
 * for (`uv_poll_start(handle, events)`, not the union). A port that sends and receives at once has a write
 * waiting for "writable" and a read waiting for "readable"; whichever asks second cancels the other's wait
 * in the kernel (epoll then watches the tty for EPOLLIN only, say). The write resumes only if some later
 * event on the port happens to re-arm it; when the other side has nothing more to send, none does, and the
 * port stalls for good with empty kernel buffers (docs/serial.md, "Both directions at once").
 *
 * keepPollInterest makes each poll request also carry the events somebody is still waiting for, so a wait
 * can no longer cancel another. It relies on the Poller's shape (`poll(flags)` called by `once(event)`, an
 * EventEmitter); on another shape it changes nothing and says so.
 */
import type { SerialPort } from 'serialport';

/** libuv's poll flags, as the Poller's `poll(flags)` takes them. */
const POLL_FLAGS: readonly (readonly [event: string, flag: number])[] = [
  ['readable', 1],
  ['writable', 2],
  ['disconnect', 4],
];

interface PollerLike {
  poll(flags: number): void;
  listenerCount(event: string): number;
}

function isPollerLike(value: unknown): value is PollerLike {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<Record<'poll' | 'listenerCount', unknown>>;
  return typeof candidate.poll === 'function' && typeof candidate.listenerCount === 'function';
}

/** The events with a listener still waiting on `poller`, as poll flags. */
function waitedFor(poller: PollerLike): number {
  let flags = 0;
  for (const [event, flag] of POLL_FLAGS) if (poller.listenerCount(event) > 0) flags |= flag;
  return flags;
}

/** Patch an open port's poller; false when the port has no poller of the expected shape (left as it is). */
export function keepPollInterest(port: SerialPort): boolean {
  const binding: unknown = port.port;
  const poller = typeof binding === 'object' && binding !== null ? (binding as { poller?: unknown }).poller : undefined;
  if (!isPollerLike(poller)) return false;
  const request = poller.poll.bind(poller);
  poller.poll = (flags: number): void => request(flags | waitedFor(poller));
  return true;
}
