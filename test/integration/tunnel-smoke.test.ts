import { type ManagedProcess, isEvent } from '../../devtools/portway-cluster';
import { Disposer, startCluster, startHttpServer, runProcess, HELLO_TEXT } from '../helpers';

describe('tunnel smoke', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('curl reaches an HTTP server on the device through relay and agent', async () => {
    const http = await startHttpServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });
    const { port } = await cluster.connect('web');
    const result = await runProcess(disposer, 'curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`], { timeoutMs: 15_000 });
    expect(result.stdout).toBe(HELLO_TEXT);
  });

  it('later streams of one portway connect resume the inner TLS session (no certificate signatures), and still work', async () => {
    const http = await startHttpServer(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });
    const { port } = await cluster.connect('web');
    const agent = cluster.agent as ManagedProcess;
    const from = agent.lines.length;
    for (let i = 0; i < 4; i++) {
      const result = await runProcess(disposer, 'curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`], { timeoutMs: 15_000 });
      expect(result.stdout).toBe(HELLO_TEXT);
    }
    await agent.waitForLine((l) => agent.lines.indexOf(l) >= from && agent.lines.slice(from).filter(isEvent('agent.stream.opened')).length >= 4, 10_000, 'four streams opened');
    const resumed = agent.lines.slice(from).filter(isEvent('agent.stream.opened')).map((l) => (JSON.parse(l) as { resumed: boolean }).resumed);
    // The first stream is a full handshake; each later one offers a ticket from an earlier stream.
    expect(resumed).toEqual([false, true, true, true]);
  });
});
