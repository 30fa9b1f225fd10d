/** `npm run demo` (dist/scripts/demo.js): the whole path on loopback, as a new user first sees it. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Disposer, runProcess } from '../helpers';

const DEMO = path.resolve(__dirname, '..', '..', 'dist', 'scripts', 'demo.js');

describe('demo', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('runs relay, agent and client, gets the sample response through the tunnel, and cleans up', async () => {
    const result = await runProcess(disposer, process.execPath, [DEMO], { timeoutMs: 90_000 });
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^response: HTTP\/1\.1 200 OK "Hello from the sample service on the device!"$/m);
    expect(result.stdout).toMatch(/hop 4 .* it saw "GET \/ HTTP\/1\.1"/);
    expect(result.stdout).toMatch(/^\s+pi1\s+dev_[a-z2-7]{16}\s+yes\s.*\sweb\/tcp$/m);
    expect(result.stdout.trimEnd().split('\n').pop()).toBe('demo finished: OK');
    const workDir = /working directory: (\S+)/.exec(result.stdout)?.[1];
    expect(workDir).toBeDefined();
    expect(existsSync(workDir as string)).toBe(false);
  });
});
