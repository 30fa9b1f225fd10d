/**
 * `portway agent --config FILE`: run the device agent until SIGTERM/SIGINT.
 * The one place the agent reads its environment: NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from systemd
 * (Type=notify, WatchdogSec=), and PATH to find systemd-notify and vcgencmd. `metrics` (the `--metrics` flag)
 * overrides the config's metricsListen: a loopback HOST:PORT for Prometheus metrics (docs/reliability.md).
 */
import { PortwayError } from '../../protocol';
import { createLogger } from '../../shared/logger';
import { Agent } from './agent';
import { loadAgentConfig } from './config';
import { findProgram } from './find-program';
import { SystemdNotifier } from './watchdog/systemd-notifier';

export async function runAgent(configFile: string, flags: { metrics?: string } = {}): Promise<void> {
  const config = loadAgentConfig(configFile);
  const log = createLogger({ level: config.logLevel, name: 'portway-agent' });
  const env = process.env;
  // WATCHDOG_PID names the process the watchdog is meant for; another PID (a child of ours) must not ping.
  const isWatchdogOurs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
  const notifier = new SystemdNotifier(
    { log: log.child({ component: 'systemd' }) },
    { notifySocket: env.NOTIFY_SOCKET, watchdogUsec: isWatchdogOurs && env.WATCHDOG_USEC ? Number(env.WATCHDOG_USEC) : undefined, program: env.NOTIFY_SOCKET ? findProgram('systemd-notify', env.PATH) : undefined },
  );
  const agent = new Agent({ log, vcgencmd: findProgram('vcgencmd', env.PATH) }, config);
  // Loaded only when asked for: prom-client costs an idle device memory it has little of.
  let metrics: { stop(): Promise<void> } | undefined;
  const metricsListen = flags.metrics ?? config.metricsListen;
  if (metricsListen !== undefined) {
    const { AgentMetrics, parseMetricsAddress } = await import('./agent-metrics.js');
    const at = parseMetricsAddress(metricsListen);
    const endpoint = new AgentMetrics(agent);
    metrics = endpoint;
    log.info({ metrics: await endpoint.listen(at.host, at.port) }, 'agent.metrics.listening');
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'agent.stopping');
    notifier.stopping();
    agent.stop().then(
      async () => {
        await metrics?.stop();
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'agent.stop_failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Pings start with the process: enrolling may wait for the network for a long time, and a hang there
  // must be caught too. READY=1 follows once the config is valid and the agent runs (enrolling or online):
  // a field device may be offline for days, so readiness does not wait for the relay, and neither does
  // `systemctl start` (nor dpkg's postinst).
  notifier.startWatchdog();
  const started = agent.start();
  notifier.ready();
  try {
    await started;
  } catch (err) {
    if (err instanceof PortwayError) log.error({ code: err.code, reason: err.message }, 'agent.start_failed');
    throw err;
  }
}
