/**
 * Link-down in a network namespace (docs/reliability.md, "Agent starts with no network"): the agent runs in a
 * namespace this test makes (`ip netns exec`), joined to the host by a veth pair; the relay listens on the host
 * end's address. The agent starts with its end of the link DOWN (no route to the relay: every attempt fails),
 * the link comes up a few seconds later, and the agent must be online within 5 s of that, with the test timer
 * profile (backoffCapMs 1 s, as R-F's "agent started with no network"), and carry a stream over the link.
 * Needs root; the namespace and the veth pair are deleted in clean-up, also when a step fails.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { ManagedProcess, PORTWAY_BIN, type PortwayCluster, isEvent } from '../../devtools/portway-cluster';
import { Disposer, FAST_AGENT_TIMERS, startCluster } from '../helpers';
import { createVethNamespace, type VethNamespace } from '../helpers/netns';
import { eventsSince, nextEventAt } from '../helpers/reliability';

const DOWN_MS = 5_000;

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

describe('link-down in a network namespace', () => {
  const suite = new Disposer();
  let link: VethNamespace;
  let cluster: PortwayCluster;

  beforeAll(async () => {
    link = await createVethNamespace(suite);
    // The device's service: an echo server on the host end, reached by the agent over the veth link.
    const echo = net.createServer((socket) => {
      socket.on('error', () => undefined); // ECONNRESET when a stream is aborted
      socket.pipe(socket);
    });
    await new Promise<void>((resolve, reject) => {
      echo.once('error', reject);
      echo.listen(0, link.hostAddress, resolve);
    });
    suite.add(() => new Promise<void>((resolve) => echo.close(() => resolve())), 'close echo');
    const echoPort = (echo.address() as net.AddressInfo).port;
    // Relay on the host end of the veth (its certificate names that address); the agent enrolls from the host first.
    cluster = await startCluster(suite, {
      relayHost: link.hostAddress,
      services: [{ name: 'echo', type: 'tcp', target: `${link.hostAddress}:${String(echoPort)}` }],
      agentTimers: FAST_AGENT_TIMERS,
      logLevel: 'debug',
    });
    await (cluster.agent as ManagedProcess).stop();
  }, 90_000);
  afterAll(() => suite.run(), 30_000);

  it('agent started in a namespace whose link is down is online within 5 s of the link coming up, and carries a stream', async () => {
    const disposer = new Disposer();
    try {
      const [cmd, ...args] = [...link.execPrefix, process.execPath, PORTWAY_BIN, 'agent', '--config', cluster.agentConfigFile];
      // `ip netns exec` execs the program in place: the child's PID is the agent's, signals reach it.
      const agent = new ManagedProcess(spawn(cmd as string, args, { env: cluster.env, stdio: ['pipe', 'pipe', 'pipe'] }));
      agent.child.on('error', () => undefined); // reported through `exited`
      disposer.add(() => agent.stop('SIGTERM', 5_000), 'stop agent in namespace');
      cluster.agent = agent;

      // Link down: every attempt fails at once (no route), while the backoff grows to its cap.
      await agent.waitForLine(isEvent('agent.reconnect.scheduled'), 10_000, 'a first failed attempt');
      await new Promise((r) => setTimeout(r, DOWN_MS));
      const failedAttempts = eventsSince(agent, 'agent.reconnect.scheduled', 0).length;
      const errorCodes = [...new Set(eventsSince(agent, 'agent.control.error', 0).map((e) => String(e.code)))];
      expect(eventsSince(agent, 'agent.control.online', 0)).toEqual([]);

      const online = nextEventAt(agent, 'agent.control.online', 15_000);
      const upStarted = Date.now();
      await link.setNsLink('up');
      const upDone = Date.now();
      const onlineAt = (await online).at;
      const onlineAfterLinkMs = onlineAt - upStarted;
      figure('netns-link-down-at-start', { downMs: DOWN_MS, failedAttempts, errorCodes, ipLinkUpMs: upDone - upStarted, onlineAfterLinkMs, backoffCapMs: FAST_AGENT_TIMERS.backoffCapMs, ns: link.ns });
      expect(failedAttempts).toBeGreaterThanOrEqual(3);
      expect(errorCodes).toContain('ENETUNREACH');
      expect(onlineAfterLinkMs).toBeLessThanOrEqual(5_000);

      // The stream goes client → relay (host) → agent (namespace, over the veth) → echo (host end).
      const result = await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'over the veth\n', timeoutMs: 20_000 });
      expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 0, stdout: 'over the veth\n' });
    } finally {
      await disposer.run();
    }
  }, 60_000);
});
