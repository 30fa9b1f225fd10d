/** Start a PortwayCluster (real relay, agent and client processes) registered on the test's Disposer. */
import { PortwayCluster, type ClusterOptions } from '../../devtools/portway-cluster';
import type { Disposer } from './disposer';
import { makeTempDir } from './tmp';

/** Timers for tests: same code paths as production, shorter waits. */
export const FAST_AGENT_TIMERS = {
  keepaliveS: 2,
  connectTimeoutMs: 3_000,
  backoffBaseMs: 100,
  backoffCapMs: 1_000,
  backoffStableMs: 2_000,
  serviceConnectTimeoutMs: 2_000,
  streamHandshakeTimeoutMs: 5_000,
  closeGraceMs: 2_000,
  // Dead after 3 of these: long enough for tests that load the machine hard (10,000 garbage connections).
  streamHeartbeatMs: 5_000,
};

export const FAST_RELAY_CONFIG = {
  // deviceAdmissionWaitMs stays below FAST_AGENT_TIMERS.connectTimeoutMs, as the production defaults do (5 s < 10 s).
  timers: { tlsHandshakeTimeoutMs: 3_000, firstFrameTimeoutMs: 3_000, dialTimeoutMs: 5_000, streamCloseGraceMs: 5_000, mqttConnectTimeoutMs: 3_000, deviceAdmissionWaitMs: 2_000 },
};

export async function startCluster(disposer: Disposer, options: Omit<ClusterOptions, 'dir'>): Promise<PortwayCluster> {
  const dir = await makeTempDir(disposer, 'portway-cluster-');
  const cluster = await PortwayCluster.start({ dir, agentTimers: FAST_AGENT_TIMERS, relayConfig: FAST_RELAY_CONFIG, ...options });
  disposer.add(() => cluster.stop());
  return cluster;
}
