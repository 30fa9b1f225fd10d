/**
 * The relay on an external MQTT broker (`portway relay --broker mqtt://...`): the machine's own Mosquitto on
 * 127.0.0.1:1883 for the whole path, and a private Mosquitto (test/helpers/mosquitto.ts) for a broker restart,
 * since restarting the machine's would disturb everything else that uses it.
 * The broker-level rules (ACL, CONNECT checks, garbage) are the same suite as the embedded broker's
 * (broker.test.ts runs it on both).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ManagedProcess, isEvent } from '../../devtools/portway-cluster';
import { Disposer, HELLO_TEXT, findFreePort, runProcess, startCluster, startHttpServer, startMosquitto } from '../helpers';

const MACHINE_MOSQUITTO = 'mqtt://127.0.0.1:1883';

describe('relay with an external MQTT broker', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it("on the machine's Mosquitto: the agent comes online, curl reaches the device's service, portway devices shows it online", async () => {
    const http = await startHttpServer(disposer);
    const cluster = await startCluster(disposer, { relayBroker: MACHINE_MOSQUITTO, services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });
    const relay = cluster.relay as ManagedProcess;
    expect(relay.lines.some((l) => isEvent('broker.external.started')(l) && l.includes('mqtt://127.0.0.1:1883'))).toBe(true);
    await relay.waitForLine(isEvent('relay.device.online'), 10_000, 'relay.device.online');
    const { port } = await cluster.connect('web');
    const result = await runProcess(disposer, 'curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`], { timeoutMs: 15_000 });
    expect(result.stdout).toBe(HELLO_TEXT);
    const devices = await cluster.runCli(['devices', '--json'], { timeoutMs: 20_000 });
    const listed = JSON.parse(devices.stdout) as Array<{ name: string; online: boolean }>;
    expect(listed.find((d) => d.name === cluster.deviceName)?.online).toBe(true);
  });

  it('broker restart (SIGKILL, then listening again on its port): control back within 5 s, the relay resubscribed, one session per device, streams work', async () => {
    const broker = await startMosquitto(disposer);
    const cluster = await startCluster(disposer, { relayBroker: broker.url, services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${(await startHttpServer(disposer)).port}` }] });
    const agent = cluster.agent as ManagedProcess;
    const before = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'GET /hello HTTP/1.0\r\n\r\n', timeoutMs: 20_000 });
    expect(before.stdout).toContain(HELLO_TEXT);

    const disconnectedFrom = agent.lines.length;
    await broker.stop('SIGKILL');
    await agent.waitForLine((l) => agent.lines.indexOf(l) >= disconnectedFrom && isEvent('agent.control.disconnected')(l), 10_000, 'agent.control.disconnected');
    await new Promise((r) => setTimeout(r, 1_000));
    const onlineFrom = agent.lines.length;
    await broker.start();
    const listeningAt = Date.now();
    await agent.waitForLine((l) => agent.lines.indexOf(l) >= onlineFrom && isEvent('agent.control.online')(l), 15_000, 'agent.control.online');
    const backMs = Date.now() - listeningAt;
    expect({ backWithin5s: backMs <= 5_000 }).toEqual({ backWithin5s: true });

    // A new stream needs the relay's own subscriptions (device status, the dial reply path) and the agent's (cmd).
    const after = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'GET /hello HTTP/1.0\r\n\r\n', timeoutMs: 20_000 });
    expect({ code: after.code, hello: after.stdout.includes(HELLO_TEXT), stderr: after.stderr }).toEqual({ code: 0, hello: true, stderr: '' });
    // One MQTT session for the device: exactly one online line since the restart, and no replacement.
    const relay = cluster.relay as ManagedProcess;
    expect(relay.lines.filter((l) => isEvent('broker.session.replaced')(l)).length).toBe(0);
    process.stdout.write(`external broker restart: agent online ${backMs} ms after the broker listened again\n`);
  });

  it('a relay whose broker cannot be reached refuses to start: PW_BROKER_UNREACHABLE, exit status not 0', async () => {
    const port = await findFreePort();
    const cluster = await startCluster(disposer, { services: [] });
    await (cluster.relay as ManagedProcess).stop('SIGTERM', 5_000);
    const result = await cluster.runCli(['relay', '--data', cluster.relayDir, '--listen', `127.0.0.1:${await findFreePort()}`, '--broker', `mqtt://127.0.0.1:${port}`], { timeoutMs: 20_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('PW_BROKER_UNREACHABLE');
  });

  it('a brokerCaFile that cannot be read stops the relay at start with PW_CONFIG_INVALID naming the file', async () => {
    const cluster = await startCluster(disposer, { services: [] });
    const config = path.join(cluster.dir, 'broker-ca.json');
    await fs.writeFile(config, JSON.stringify({ brokerCaFile: '/nonexistent/broker-ca.pem' }));
    const result = await cluster.runCli(['relay', '--data', cluster.relayDir, '--listen', `127.0.0.1:${await findFreePort()}`, '--broker', 'mqtts://127.0.0.1:8883', '--config', config], { timeoutMs: 20_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('PW_CONFIG_INVALID');
    expect(result.stderr).toContain('cannot read brokerCaFile /nonexistent/broker-ca.pem: ENOENT');
  });

  it.each([
    ['http://127.0.0.1:1883', 'scheme'],
    ['mqtt://user:secret@127.0.0.1:1883', 'PORTWAY_BROKER_PASSWORD'],
    ['mqtt://127.0.0.1:1883/topic', 'no path'],
    ['not a url', 'must be a URL'],
  ])('a bad --broker %s stops the relay at start (PW_CONFIG_INVALID, says %s)', async (url, says) => {
    const cluster = await startCluster(disposer, { services: [] });
    const result = await cluster.runCli(['relay', '--data', cluster.relayDir, '--listen', `127.0.0.1:${await findFreePort()}`, '--broker', url], { timeoutMs: 20_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('PW_CONFIG_INVALID');
    expect(result.stderr).toContain(says);
    // The password in a URL is never echoed back.
    expect(result.stderr).not.toContain('secret');
  });
});
