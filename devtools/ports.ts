/**
 * Free TCP ports for programs that cannot listen on port 0 and report back (sshd, iperf3).
 * Racy by nature: another process may take the port before the program binds it, so callers retry on
 * EADDRINUSE a bounded number of times. Anything that can listen on port 0 should do that instead.
 */
import { createServer } from 'node:net';

export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('findFreePort: no TCP address');
    return address.port;
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
