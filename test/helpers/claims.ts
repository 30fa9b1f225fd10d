/** Claim-code test helpers: agents that wait to be claimed, the CLI as another user, raw HTTPS to the relay API. */
import { promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { ALPN_HTTP } from '../../protocol';
import { isEvent, type CliResult, type ManagedProcess, type PortwayCluster, type ServiceSpec } from '../../devtools/portway-cluster';
import type { Disposer } from './disposer';
import { makeTempDir } from './tmp';

const CLI_TIMEOUT_MS = 30_000;

/** Relay claim settings for tests: short answer and poll waits (same code paths). */
export const CLAIM_RELAY_CONFIG = { claims: { answerTimeoutMs: 5_000, maxWaitMs: 5_000, pollMs: 100 } };

export interface ClaimAgent {
  readonly proc: ManagedProcess;
  readonly stateDir: string;
  readonly bootDir: string;
  readonly codeFile: string;
  readonly consoleFile: string;
}

/** Start an agent with no enrollment key (and `claimCode` when given); resolves once it waits to be claimed. */
export async function startClaimAgent(cluster: PortwayCluster, disposer: Disposer, options: { name: string; services: readonly ServiceSpec[]; claimCode?: string }): Promise<ClaimAgent> {
  const dir = await makeTempDir(disposer, `portway-claim-${options.name}-`);
  const bootDir = path.join(dir, 'boot');
  await fs.mkdir(bootDir);
  const stateDir = path.join(dir, 'state');
  const codeFile = path.join(bootDir, 'portway-claim-code.txt');
  const consoleFile = path.join(dir, 'console');
  const config = {
    relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, stateDir, name: options.name, services: options.services, logLevel: 'debug',
    claimCodeFile: codeFile, claimConsole: consoleFile, timers: cluster.options.agentTimers, ...(options.claimCode ? { claimCode: options.claimCode } : {}),
  };
  const file = path.join(dir, 'agent.json');
  await fs.writeFile(file, JSON.stringify(config));
  const proc = cluster.spawnCli(['agent', '--config', file]);
  disposer.add(() => proc.stop('SIGTERM', 5_000));
  await proc.waitForLine(isEvent('agent.claim.waiting'), 20_000, 'agent.claim.waiting');
  return { proc, stateDir, bootDir, codeFile, consoleFile };
}

/** Run the CLI with another config home (undefined: the cluster's own user, alice). */
export async function runAs(cluster: PortwayCluster, home: string | undefined, args: readonly string[], input?: string): Promise<CliResult> {
  const proc = cluster.spawnCli(args, home === undefined ? {} : { XDG_CONFIG_HOME: home });
  proc.child.stdin?.end(input);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), CLI_TIMEOUT_MS);
  try {
    const code = await proc.exited;
    return { code, stdout: proc.lines.join('\n') + (proc.lines.length ? '\n' : ''), stderr: proc.stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** A second user: `relay user add NAME`, logged in with their own config home. */
export async function addUser(cluster: PortwayCluster, disposer: Disposer, name: string): Promise<{ home: string; token: string }> {
  const added = await runAs(cluster, undefined, ['relay', 'user', 'add', name, '--data', cluster.relayDir, ...cluster.dbArgs]);
  if (added.code !== 0) throw new Error(`user add failed: ${added.stderr}`);
  const token = added.stdout.trim();
  const home = await makeTempDir(disposer, `portway-home-${name}-`);
  const login = await runAs(cluster, home, ['login', '--relay', cluster.relayAddress, '--token', '-', '--fingerprint', cluster.caFingerprint], token);
  if (login.code !== 0) throw new Error(`login failed: ${login.stderr}`);
  return { home, token };
}

export interface ApiCall {
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly path: string;
  readonly token?: string;
  readonly body?: unknown;
  /** Source address of the request (any 127.0.0.0/8 address). */
  readonly localAddress?: string;
  readonly agent?: https.Agent;
}

const caCache = new Map<string, string>();

/** One HTTPS request to the relay's API; resolves with the status and the parsed JSON body. */
export async function relayApi(cluster: PortwayCluster, call: ApiCall): Promise<{ status: number; body: Record<string, unknown> }> {
  const caFile = path.join(cluster.configHome, 'portway', 'relay-ca.crt');
  const ca = call.agent ? (caCache.get(caFile) ?? caCache.set(caFile, await fs.readFile(caFile, 'utf8')).get(caFile)) : await fs.readFile(caFile, 'utf8');
  const payload = call.body === undefined ? undefined : Buffer.from(JSON.stringify(call.body));
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1', port: cluster.relayPort, method: call.method, path: call.path, ca, ALPNProtocols: [ALPN_HTTP], localAddress: call.localAddress, agent: call.agent ?? false, timeout: 30_000,
        headers: { ...(call.token ? { authorization: `Bearer ${call.token}` } : {}), ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
      } as https.RequestOptions,
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
          } catch (err) {
            reject(err as Error);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('request timeout')));
    req.end(payload);
  });
}
