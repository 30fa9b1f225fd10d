/**
 * The test helpers themselves, with the real programs they wrap: OpenSSH (ssh against our sshd, also
 * through a delay link via socat), curl against the HTTP server, node clients against the echo server.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { stat } from 'node:fs/promises';
import { pseudoRandomBytes, pseudoRandomChunks, startDelayLink } from '../../devtools';
import {
  Disposer,
  HELLO_TEXT,
  collectBytes,
  connectTcp,
  makeTempDir,
  once,
  runProcess,
  startEchoServer,
  startHttpServer,
  startSshd,
  waitFor,
} from '../helpers';

const disposer = new Disposer();
afterEach(() => disposer.run());

describe('Disposer', () => {
  it('runs steps newest first, runs them all even when some fail, then reports the failures', async () => {
    const local = new Disposer();
    const order: string[] = [];
    local.add(() => order.push('first'));
    local.add(() => {
      throw new Error('second failed');
    });
    local.add(async () => order.push('third'));
    await expect(local.run()).rejects.toThrow('second failed');
    expect(order).toEqual(['third', 'first']);
    expect(local.size).toBe(0);
    await local.run(); // empty now: a second run does nothing
  });

  it('bounds a step that never finishes', async () => {
    const local = new Disposer(50);
    local.add(() => new Promise(() => undefined), 'stuck step');
    await expect(local.run()).rejects.toThrow('dispose step "stuck step" did not finish within 50 ms');
  });
});

describe('wait helpers', () => {
  it('once resolves with the event arguments, rejects on error and on timeout', async () => {
    const emitter = new EventEmitter();
    const ready = once<[number, string]>(emitter, 'ready', 1000);
    emitter.emit('ready', 1, 'a');
    await expect(ready).resolves.toEqual([1, 'a']);
    const failing = once(emitter, 'ready', 1000);
    emitter.emit('error', new Error('boom'));
    await expect(failing).rejects.toThrow('boom');
    await expect(once(emitter, 'never', 20)).rejects.toThrow("timed out after 20 ms waiting for 'never'");
    expect(emitter.listenerCount('ready') + emitter.listenerCount('error') + emitter.listenerCount('never')).toBe(0);
  });

  it('waitFor returns the first truthy value and times out with the description', async () => {
    let calls = 0;
    await expect(waitFor(() => (++calls >= 3 ? 'done' : null), { intervalMs: 1 })).resolves.toBe('done');
    await expect(waitFor(() => false, { timeoutMs: 30, intervalMs: 5, description: 'nothing' })).rejects.toThrow(
      'timed out after 30 ms waiting for nothing',
    );
  });
});

describe('makeTempDir', () => {
  it('creates a private directory that the disposer removes', async () => {
    const local = new Disposer();
    const dir = await makeTempDir(local);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    await local.run();
    await expect(stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('pseudoRandomBytes', () => {
  it('is deterministic per seed, and windows and chunks agree with the whole', () => {
    const whole = pseudoRandomBytes('seed-1', 100_000);
    expect(pseudoRandomBytes('seed-1', 100_000).equals(whole)).toBe(true);
    expect(pseudoRandomBytes('seed-2', 100).equals(whole.subarray(0, 100))).toBe(false);
    expect(pseudoRandomBytes('seed-1', 1000, 12_345).equals(whole.subarray(12_345, 13_345))).toBe(true);
    expect(Buffer.concat([...pseudoRandomChunks('seed-1', 100_000, 7777)]).equals(whole)).toBe(true);
  });
});

describe('echo server', () => {
  it('echoes in order and answers a FIN with a FIN', async () => {
    const echo = await startEchoServer(disposer);
    const client = await connectTcp(disposer, echo);
    const collector = collectBytes(client);
    const payload = pseudoRandomBytes('echo', 3 * 1024 * 1024);
    client.end(payload);
    expect((await collector.waitForEnd(20_000)).equals(payload)).toBe(true);
    expect(echo.stats().connectionsAccepted).toBe(1);
  });
});

describe('http server', () => {
  it('serves /hello, /echo, /sha256 and /bytes to curl', async () => {
    const http = await startHttpServer(disposer);
    const curl = (args: string[], input?: Buffer) =>
      runProcess(disposer, 'curl', ['--silent', '--show-error', '--max-time', '20', ...args], {
        ...(input === undefined ? {} : { input }),
      });

    const hello = await curl([http.url('/hello')]);
    expect(hello.stdout).toBe(HELLO_TEXT);

    const body = pseudoRandomBytes('http-echo', 100_000);
    const sha = createHash('sha256').update(body).digest('hex');
    const echoArgs = ['--data-binary', '@-', '--dump-header', '-', '--output', '/dev/null', http.url('/echo')];
    const echoed = await curl(echoArgs, body);
    expect(echoed.stdout.toLowerCase()).toContain(`x-body-sha256: ${sha}`);
    expect(echoed.stdout.toLowerCase()).toContain(`content-length: ${body.length}`);

    const response = await fetch(http.url('/echo'), { method: 'POST', body });
    expect(response.headers.get('x-body-sha256')).toBe(sha);
    expect(Buffer.from(await response.arrayBuffer()).equals(body)).toBe(true);

    const digest = await curl(['--data-binary', '@-', http.url('/sha256')], body);
    expect(digest.stdout).toBe(`${sha}\n`);

    const expected = createHash('sha256').update(pseudoRandomBytes('s7', 200_000)).digest('hex');
    const url = http.url('/bytes?n=200000&seed=s7');
    const sums = await runProcess(disposer, 'sh', ['-c', `curl --silent --max-time 20 '${url}' | sha256sum`]);
    expect(sums.stdout.split(' ')[0]).toBe(expected);

    const missing = await curl(['--write-out', '%{http_code}', '--output', '/dev/null', http.url('/nope')]);
    expect(missing.stdout).toBe('404');
  });

  it('/bytes with rate= is paced at the source and intact; a bad rate is a 400', async () => {
    const http = await startHttpServer(disposer);
    const expected = createHash('sha256').update(pseudoRandomBytes('paced', 300_000)).digest('hex');
    const startedAt = Date.now();
    const paced = await runProcess(disposer, 'sh', ['-c', `curl --silent --max-time 20 '${http.url('/bytes?n=300000&seed=paced&rate=1000000')}' | sha256sum`]);
    // 300 kB at 1 MB/s cannot arrive in less than 300 ms (the pacing never runs ahead); an unpaced one takes ~1 ms.
    expect({ sha256: paced.stdout.split(' ')[0], atLeast300ms: Date.now() - startedAt >= 300 }).toEqual({ sha256: expected, atLeast300ms: true });
    for (const rate of ['0', '-5', '1.5', 'fast', '']) {
      const bad = await runProcess(disposer, 'curl', ['--silent', '--max-time', '20', '--write-out', '%{http_code}', '--output', '/dev/null', http.url(`/bytes?n=10&rate=${rate}`)]);
      expect({ rate, status: bad.stdout }).toEqual({ rate, status: '400' });
    }
  });
});

describe('sshd', () => {
  it('accepts ssh with the generated client key and a pinned host key', async () => {
    const sshd = await startSshd(disposer);
    const result = await runProcess(disposer, 'ssh', [...sshd.sshArgs(), 'true']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const echo = await runProcess(disposer, 'ssh', [...sshd.sshArgs(), 'echo', 'hello']);
    expect(echo.stdout).toBe('hello\n');
  });

  it('works through a delay link by ProxyCommand, under any host name', async () => {
    const sshd = await startSshd(disposer);
    const link = await startDelayLink({ upstream: sshd, oneWayDelayMs: 5 });
    disposer.add(() => link.stop(), 'stop delay link');
    const proxyCommand = `ProxyCommand=socat - TCP:${link.host}:${link.port}`;
    const result = await runProcess(disposer, 'ssh', [...sshd.sshOptions(), '-o', proxyCommand, 'device-1', 'true']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(link.stats().connectionsAccepted).toBe(1);
  });

  it('rejects a client whose key is not authorized', async () => {
    const sshd = await startSshd(disposer);
    const other = await startSshd(disposer);
    const args = sshd.sshArgs().map((arg) => (arg === sshd.clientKeyPath ? other.clientKeyPath : arg));
    const result = await runProcess(disposer, 'ssh', [...args, 'true']);
    expect(result.code).toBe(255);
    expect(result.stderr).toMatch(/Permission denied/);
  });
});
