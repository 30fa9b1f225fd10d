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
});
