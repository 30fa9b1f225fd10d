/**
 * The serialport package alone (no Portway), one port on each end of a socat pty pair, each sending 1 MiB
 * while it receives the other's 1 MiB. Unpatched, @serialport/bindings-cpp 13 loses a write's wait for
 * "writable" whenever a read starts waiting for "readable" (its Poller starts libuv's poll with the latest
 * event only), and such a pair stalls for good in most runs with both ptys' buffers empty
 * (docs/serial.md, "Both directions at once"). With keepPollInterest, as the agent and the test helpers
 * open ports, every round completes.
 */
import path from 'node:path';
import { pseudoRandomBytes } from '../../devtools';
import { Disposer, makeTempDir } from '../helpers';
import { ByteTaker, openPeer, startPtyPair } from '../helpers/pty';

jest.setTimeout(120_000);

const MIB = 1024 * 1024;
const ROUNDS = 5;
const ROUND_TIMEOUT_MS = 20_000;

describe('serialport on both ends of a pty pair', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  afterEach(() => disposer.run());
  afterAll(() => suite.run());

  it(`moves 1 MiB each way at the same time, intact, ${ROUNDS} rounds (keepPollInterest on both ports)`, async () => {
    const dir = await makeTempDir(suite, 'portway-serial-poll-');
    for (let round = 1; round <= ROUNDS; round++) {
      const pair = await startPtyPair(disposer, path.join(dir, `a${round}`), path.join(dir, `b${round}`));
      const [a, b] = [await openPeer(disposer, pair.agentPath), await openPeer(disposer, pair.peerPath)];
      const [atA, atB] = [new ByteTaker(a), new ByteTaker(b)];
      const [toB, toA] = [pseudoRandomBytes(`a to b ${round}`, MIB), pseudoRandomBytes(`b to a ${round}`, MIB)];
      a.write(toB);
      b.write(toA);
      const [gotA, gotB] = await Promise.all([atA.take(MIB, ROUND_TIMEOUT_MS), atB.take(MIB, ROUND_TIMEOUT_MS)]);
      expect({ round, aIntact: gotA.equals(toA), bIntact: gotB.equals(toB) }).toEqual({ round, aIntact: true, bIntact: true });
      await disposer.run();
    }
  });
});
