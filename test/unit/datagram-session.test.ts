/**
 * shared/datagram-session.ts: one UDP session as a byte stream. Alone (frames written in by hand, the
 * datagrams it sends recorded), and as both ends of a stream: two sessions, each under pumpE2E, over a
 * loopback TCP connection, so idle ends, FIN exchange, drops and the close grace are checked on real
 * sockets.
 */
import { once } from 'node:events';
import { DATAGRAM_HEADER_BYTES, encodeDatagram, MAX_DATAGRAM_BYTES } from '../../protocol';
import { DatagramSession, type DatagramSessionOptions } from '../../shared/datagram-session';
import { pumpE2E } from '../../shared/e2e-pump';
import { connectTcp, Disposer, startTcpServer, waitFor } from '../helpers';

const disposer = new Disposer();
afterEach(() => disposer.run());

const OPTIONS: DatagramSessionOptions = { idleTimeoutMs: 10_000, maxBacklogBytes: 64 * 1024, closeGraceMs: 2_000 };

/** A session whose sent datagrams are recorded. */
function recording(options: Partial<DatagramSessionOptions> = {}): { session: DatagramSession; sent: Buffer[] } {
  const sent: Buffer[] = [];
  const session = new DatagramSession({ send: (d, done) => (sent.push(Buffer.from(d)), setImmediate(done)) }, { ...OPTIONS, ...options });
  session.on('error', () => undefined);
  disposer.add(() => session.destroy(), 'destroy session');
  return { session, sent };
}

/** Read the frames a session produced so far (it must be paused, i.e. not yet piped). */
function framesOf(session: DatagramSession): Buffer {
  const chunks: Buffer[] = [];
  for (let chunk = session.read() as Buffer | null; chunk !== null; chunk = session.read() as Buffer | null) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('DatagramSession alone', () => {
  it('frames each delivered datagram, the empty one included', () => {
    const { session } = recording();
    session.deliver(Buffer.from('ab'));
    session.deliver(Buffer.alloc(0));
    expect(framesOf(session)).toEqual(Buffer.concat([encodeDatagram(Buffer.from('ab')), encodeDatagram(Buffer.alloc(0))]));
    expect(session.counters.datagramsIn).toBe(2);
  });

  it('sends each datagram written to it, keeps going after oversized frames and counts them', async () => {
    const { session, sent } = recording();
    const oversized = Buffer.alloc(DATAGRAM_HEADER_BYTES);
    oversized.writeUInt32BE(MAX_DATAGRAM_BYTES + 1);
    session.write(Buffer.concat([encodeDatagram(Buffer.from('one')), oversized, Buffer.alloc(MAX_DATAGRAM_BYTES + 1, 7), encodeDatagram(Buffer.from('two'))]));
    await waitFor(() => sent.length === 2);
    expect(sent.map((d) => d.toString())).toEqual(['one', 'two']);
    expect(session.counters).toMatchObject({ datagramsOut: 2, dropped: { oversized: 1 } });
  });

  it('counts a frame cut by the end of the stream as truncated, and ends its own side in turn', async () => {
    const { session, sent } = recording();
    session.end(encodeDatagram(Buffer.from('whole-frame')).subarray(0, 8));
    await once(session, 'finish');
    expect(sent).toEqual([]);
    expect(session.counters.dropped.truncated).toBe(1);
    expect(session.closeReason).toBe('peer');
    session.resume();
    await once(session, 'end');
  });

  it('drops datagrams beyond its backlog instead of buffering them, and counts them', () => {
    const { session } = recording({ maxBacklogBytes: 10_000 });
    for (let i = 0; i < 10; i++) session.deliver(Buffer.alloc(2_000));
    expect(session.counters).toMatchObject({ datagramsIn: 4, dropped: { backlog: 6 } });
    expect(session.readableLength).toBeLessThanOrEqual(10_000);
  });

  it('drops a datagram over 65,507 bytes from the local side', () => {
    const { session } = recording();
    session.deliver(Buffer.alloc(MAX_DATAGRAM_BYTES + 1));
    expect(session.counters).toMatchObject({ datagramsIn: 0, dropped: { oversized: 1 } });
  });

  it('is cut with an error when the peer does not end its side within the close grace', async () => {
    const { session } = recording({ closeGraceMs: 50 });
    session.resume();
    session.close('evicted');
    const [err] = (await once(session, 'error')) as [Error & { code?: string }];
    expect(err.code).toBe('PW_STREAM_ABORTED');
    expect(session.closeReason).toBe('evicted');
  });

  it('does not idle out before start(), and does after', async () => {
    const { session } = recording({ idleTimeoutMs: 30 });
    session.resume();
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(session.closeReason).toBeUndefined();
    session.start();
    await once(session, 'end');
    expect(session.closeReason).toBe('idle');
  });
});

describe('two DatagramSessions as the ends of one stream', () => {
  async function stream(a: Partial<DatagramSessionOptions>, b: Partial<DatagramSessionOptions>) {
    const server = await startTcpServer(disposer);
    const left = await connectTcp(disposer, server);
    const right = await server.nextConnection();
    const ends = [recording(a), recording(b)] as const;
    const results = [pumpE2E(left, ends[0].session, { closeGraceMs: 2_000 }), pumpE2E(right, ends[1].session, { closeGraceMs: 2_000 })];
    ends.forEach((e) => e.session.start());
    return { ends, results };
  }

  it('carries datagrams both ways; the side that idles first ends the session and both complete', async () => {
    const { ends, results } = await stream({ idleTimeoutMs: 200 }, { idleTimeoutMs: 10_000 });
    ends[0].session.deliver(Buffer.from('query'));
    await waitFor(() => ends[1].sent.length === 1);
    ends[1].session.deliver(Buffer.from('answer'));
    await waitFor(() => ends[0].sent.length === 1);
    const [left, right] = await Promise.all(results);
    expect([left?.outcome, right?.outcome]).toEqual(['complete', 'complete']);
    expect([ends[0].session.closeReason, ends[1].session.closeReason]).toEqual(['idle', 'peer']);
    expect(ends[1].sent[0]?.toString()).toBe('query');
    expect(ends[0].sent[0]?.toString()).toBe('answer');
  });

  it('a close on one side (eviction, stop) ends both', async () => {
    const { ends, results } = await stream({}, {});
    ends[1].session.close('stopping');
    const outcomes = await Promise.all(results);
    expect(outcomes.map((r) => r.outcome)).toEqual(['complete', 'complete']);
    expect([ends[0].session.closeReason, ends[1].session.closeReason]).toEqual(['peer', 'stopping']);
  });
});
