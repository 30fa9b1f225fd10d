/**
 * The agent's own allow-list against a relay that forwards a forged service name (issue 6, docs/reliability.md):
 * a test build of the relay (PORTWAY_TEST_MISBEHAVE=forge-service:echo with PORTWAY_TEST_FORGED_SERVICE=NAME and
 * PORTWAY_TEST=1, relay/src/data/data-misbehaviour.ts) authorizes the client's stream to `echo` as usual and then
 * names NAME in the STREAM_OPEN it sends to the device. The device is a claimed one (owner alice, bob granted
 * `echo` only), so both of its checks are in play: its service allow-list and the owner's grants.
 * The client names the service it asked for in its inner ClientHello (protocol/e2e-service.ts), so the agent
 * sees the forgery before it looks at its allow-list or the grants.
 * Pass: for every forged name the agent logs one refusal with PW_E2E_SERVICE_MISMATCH, no connection reaches the
 * canary listener (the port the forged address names) nor the device's services, and the client exits 1 with
 * that code.
 */
import net from 'node:net';
import { isEvent, type ManagedProcess, type PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, startCluster } from '../helpers';
import { addUser, CLAIM_RELAY_CONFIG, runAs, startClaimAgent } from '../helpers/claims';

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

/** A listener that counts the connections it accepts (each a connect() some process made to it). */
async function countingListener(disposer: Disposer, label: string): Promise<{ port: number; accepts: () => number }> {
  let accepts = 0;
  const server = net.createServer((socket) => {
    accepts++;
    socket.on('error', () => undefined); // the agent may reset it
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  disposer.add(() => new Promise<void>((resolve) => server.close(() => resolve())), `close ${label}`);
  return { port: (server.address() as net.AddressInfo).port, accepts: () => accepts };
}

describe('hostile relay: a forged service name in STREAM_OPEN', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let agent: ManagedProcess;
  let bobHome: string;
  let canary: Awaited<ReturnType<typeof countingListener>>;
  let echo: Awaited<ReturnType<typeof countingListener>>;
  let web: Awaited<ReturnType<typeof countingListener>>;

  beforeAll(async () => {
    canary = await countingListener(suite, 'canary');
    echo = await countingListener(suite, 'echo');
    web = await countingListener(suite, 'web');
    const services = [
      { name: 'echo', type: 'tcp' as const, target: `127.0.0.1:${echo.port}` },
      { name: 'web', type: 'tcp' as const, target: `127.0.0.1:${web.port}` },
    ];
    cluster = await startCluster(suite, { services, relayConfig: CLAIM_RELAY_CONFIG });
    const code = (await runAs(cluster, undefined, ['claim-code', 'new'])).stdout.trim();
    const garden = await startClaimAgent(cluster, suite, { name: 'garden', services, claimCode: code });
    agent = garden.proc;
    expect(await runAs(cluster, undefined, ['claim', code, '--name', 'garden'])).toMatchObject({ code: 0 });
    await agent.waitForLine(isEvent('agent.control.online'), 20_000, 'claimed agent online');
    bobHome = (await addUser(cluster, suite, 'bob')).home;
    expect((await runAs(cluster, undefined, ['share', 'garden', 'bob', '--service', 'echo'])).code).toBe(0);
    await agent.waitForLine(isEvent('agent.grants.updated'), 20_000, 'grant set delivered');
    // Before the attack: both users reach echo, and nothing has touched the canary.
    expect(await runAs(cluster, undefined, ['pipe', 'garden', 'echo'], 'alice\n')).toMatchObject({ code: 0, stdout: 'alice\n' });
    expect(await runAs(cluster, bobHome, ['pipe', 'garden', 'echo'], 'bob\n')).toMatchObject({ code: 0, stdout: 'bob\n' });
  }, 120_000);
  afterAll(async () => {
    delete process.env.PORTWAY_TEST;
    delete process.env.PORTWAY_TEST_MISBEHAVE;
    delete process.env.PORTWAY_TEST_FORGED_SERVICE;
    await suite.run();
  }, 30_000);

  /** Restart the relay forging `forged` for every stream to echo; the claimed device back online. */
  async function forgingRelay(forged: string): Promise<ManagedProcess> {
    const onlines = agent.events('agent.control.online').length;
    await (cluster.relay as ManagedProcess).stop();
    Object.assign(process.env, { PORTWAY_TEST: '1', PORTWAY_TEST_MISBEHAVE: 'forge-service:echo', PORTWAY_TEST_FORGED_SERVICE: forged });
    try {
      const relay = await cluster.startRelay();
      expect(relay.events('relay.test_misbehaviour.enabled')).toHaveLength(1);
    } finally {
      delete process.env.PORTWAY_TEST;
      delete process.env.PORTWAY_TEST_MISBEHAVE;
      delete process.env.PORTWAY_TEST_FORGED_SERVICE;
    }
    let seen = 0;
    await agent.waitForLine((l) => isEvent('agent.control.online')(l) && ++seen > onlines, 20_000, 'agent online again');
    return cluster.relay as ManagedProcess;
  }

  it('names off the allow-list (an address, ../, look-alike Unicode, case), a service the grantee is not granted, and an exposed service the owner may use: PW_E2E_SERVICE_MISMATCH at the agent and the client, zero connect() calls', async () => {
    const cases: { forged: string; home: string | undefined; who: string; code: string }[] = [
      ...[`127.0.0.1:${canary.port}`, `localhost:${canary.port}`, String(canary.port), '../ssh', 'echo/../web', 'ech\u043e', '\uff45cho', 'ECHO', 'ssh', 'x'.repeat(256)].map((forged) => ({ forged, home: undefined, who: 'owner', code: 'PW_E2E_SERVICE_MISMATCH' })),
      // Exposed, and the owner may use it: only the binding tells the agent that the owner did not ask for it.
      { forged: 'web', home: undefined, who: 'owner', code: 'PW_E2E_SERVICE_MISMATCH' },
      { forged: 'web', home: bobHome, who: 'grantee of echo only', code: 'PW_E2E_SERVICE_MISMATCH' },
    ];
    const outcomes: Record<string, unknown>[] = [];
    for (const c of cases) {
      await forgingRelay(c.forged);
      const before = { canary: canary.accepts(), echo: echo.accepts(), web: web.accepts(), lines: agent.lines.length };
      const result = await runAs(cluster, c.home, ['pipe', 'garden', 'echo'], 'must not arrive\n');
      const refusal = await agent.waitForLine((l) => agent.lines.indexOf(l) >= before.lines && /"msg":"agent\.(stream\.refused|data_socket\.closed|stream\.opened)"/.test(l), 10_000, `the agent's answer to ${JSON.stringify(c.forged)}`);
      const logged = JSON.parse(refusal) as Record<string, unknown>;
      const outcome = {
        forged: c.forged.slice(0, 40),
        who: c.who,
        agent: { msg: logged.msg, code: logged.code },
        client: { code: result.code, stderr: result.stderr.trim() },
        connects: { canary: canary.accepts() - before.canary, echo: echo.accepts() - before.echo, web: web.accepts() - before.web },
      };
      outcomes.push(outcome);
      expect({ forged: outcome.forged, agent: outcome.agent, exit: result.code, stdout: result.stdout, clientCode: /^portway: (PW_[A-Z0-9_]+): [^\n]+\n$/.exec(result.stderr)?.[1], connects: outcome.connects })
        .toEqual({ forged: outcome.forged, agent: { msg: 'agent.stream.refused', code: c.code }, exit: 1, stdout: '', clientCode: c.code, connects: { canary: 0, echo: 0, web: 0 } });
    }
    figure('forged-service', { names: cases.length, canaryAccepts: canary.accepts(), outcomes });
    expect(canary.accepts()).toBe(0);
  }, 240_000);

});
