/**
 * A whole Portway deployment on loopback, every part a real `portway` child process: a relay (its own
 * data dir, CA and store), a user with a token, a device agent enrolled with a fleet key, and a logged-in
 * client config home. Used by the integration tests, the benchmark and `npm run demo`.
 * Ready-detection reads the JSON log lines each process prints (relay.started, agent.control.online).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { findFreePort } from './ports';

/** The built CLI: dist/cli/portway.js (from dist/devtools when compiled, from devtools/ under ts-jest). */
export const PORTWAY_BIN = path.basename(path.dirname(__dirname)) === 'dist' ? path.resolve(__dirname, '..', 'cli', 'portway.js') : path.resolve(__dirname, '..', 'dist', 'cli', 'portway.js');

export type ServiceSpec =
  | { readonly name: string; readonly type: 'tcp'; readonly target: string }
  | { readonly name: string; readonly type: 'udp'; readonly target: string; readonly idleTimeoutMs?: number; readonly maxSessions?: number }
  | { readonly name: string; readonly type: 'serial'; readonly path: string; readonly mode?: 'raw' | 'rfc2217'; readonly baudRate?: number; readonly maxTaps?: number; readonly lingerMs?: number };

export interface ClusterOptions {
  readonly dir: string;
  readonly services: readonly ServiceSpec[];
  readonly deviceName?: string;
  /** Extra relay options (timers, limits) written to its --config file. */
  readonly relayConfig?: Record<string, unknown>;
  /** Agent timers (a fast profile for tests). */
  readonly agentTimers?: Record<string, unknown>;
  /** Other agent config keys (limits such as maxStreams). */
  readonly agentConfig?: Record<string, unknown>;
  readonly logLevel?: string;
  /** The relay's store (`--db`): a postgres:// URL; absent = SQLite in the relay's data dir. */
  readonly relayDb?: string;
  /** Node options for the relay process, e.g. `relayUnitNodeArgs()` to run it as systemd/portway-relay.service does. */
  readonly relayNodeArgs?: readonly string[];
  /** Extra environment for the relay process, e.g. `unitEnvironment('portway-relay.service')`. */
  readonly relayEnv?: Readonly<Record<string, string>>;
  /** A command the relay's node runs under, e.g. a seccomp wrapper: `[program, ...args]`, then node and its arguments. */
  readonly relayLauncher?: readonly string[];
  /** The relay's external MQTT broker (`--broker`): mqtt://host:port; absent = the embedded broker. */
  readonly relayBroker?: string;
  /** The IPv4 address the relay listens on and everyone dials (added to its certificate's names); default 127.0.0.1. */
  readonly relayHost?: string;
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class ManagedProcess {
  readonly lines: string[] = [];
  stderr = '';
  private readonly waiters = new Set<{ test: (line: string) => boolean; resolve: (line: string) => void }>();
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    let buffer = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        if (this.lines.length < 20_000) this.lines.push(line);
        for (const w of this.waiters) if (w.test(line)) {
          this.waiters.delete(w);
          w.resolve(line);
        }
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (this.stderr.length < 1_000_000) this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Resolve with the first line (already seen or future) that matches; reject after timeoutMs or on exit. */
  waitForLine(test: (line: string) => boolean, timeoutMs: number, what = 'a log line'): Promise<string> {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const waiter = {
        test,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.stderr.slice(-500)}`));
      }, timeoutMs);
      this.waiters.add(waiter);
      this.exited.then((code) => {
        if (!this.waiters.has(waiter)) return;
        this.waiters.delete(waiter);
        clearTimeout(timer);
        reject(new Error(`process exited (${String(code)}) while waiting for ${what}; stderr: ${this.stderr.slice(-500)}`));
      }, () => undefined);
    });
  }

  /** Lines whose `msg` is `event` (JSON logs). */
  events(event: string): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.lines) {
      if (!line.includes(event)) continue;
      try {
        const json = JSON.parse(line) as Record<string, unknown>;
        if (json.msg === event) out.push(json);
      } catch {
        // not a JSON line
      }
    }
    return out;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export const isEvent = (event: string) => (line: string): boolean => line.includes(`"msg":"${event}"`);

export class PortwayCluster {
  relay: ManagedProcess | undefined;
  agent: ManagedProcess | undefined;
  readonly children = new Set<ManagedProcess>();
  relayPort = 0;
  caFingerprint = '';
  token = '';
  enrollKey = '';

  private constructor(readonly options: ClusterOptions) {}

  get dir(): string {
    return this.options.dir;
  }
  get relayDir(): string {
    return path.join(this.dir, 'relay');
  }
  get relayAddress(): string {
    return `${this.options.relayHost ?? '127.0.0.1'}:${this.relayPort}`;
  }
  get configHome(): string {
    return path.join(this.dir, 'client-config');
  }
  get agentConfigFile(): string {
    return path.join(this.dir, 'agent.json');
  }
  get deviceName(): string {
    return this.options.deviceName ?? 'pi1';
  }
  /** `--db URL` for every relay command, when the cluster uses PostgreSQL. */
  get dbArgs(): string[] {
    return this.options.relayDb === undefined ? [] : ['--db', this.options.relayDb];
  }
  get env(): NodeJS.ProcessEnv {
    return { ...process.env, XDG_CONFIG_HOME: this.configHome };
  }

  /** Init the relay, start it, add a user, enroll and start an agent, log the client in. */
  static async start(options: ClusterOptions): Promise<PortwayCluster> {
    const cluster = new PortwayCluster(options);
    try {
      await fs.mkdir(options.dir, { recursive: true });
      await cluster.mustRun(['relay', 'init', '--data', cluster.relayDir, ...cluster.dbArgs, ...(options.relayHost ? ['--name', options.relayHost] : [])]);
      cluster.caFingerprint = (await cluster.mustRun(['relay', 'ca', '--data', cluster.relayDir, '--fingerprint'])).stdout.trim();
      cluster.token = (await cluster.mustRun(['relay', 'user', 'add', 'alice', '--data', cluster.relayDir, ...cluster.dbArgs])).stdout.trim();
      cluster.enrollKey = (await cluster.mustRun(['relay', 'enroll-key', 'create', '--data', cluster.relayDir, '--owner', 'alice', '--uses', '5', ...cluster.dbArgs])).stdout.trim();
      await fs.writeFile(path.join(options.dir, 'relay.json'), JSON.stringify(options.relayConfig ?? {}));
      cluster.relayPort = await findFreePort(options.relayHost);
      await cluster.startRelay();
      await cluster.writeAgentConfig();
      await cluster.startAgent();
      await cluster.mustRun(['login', '--relay', cluster.relayAddress, '--token', cluster.token, '--fingerprint', cluster.caFingerprint]);
    } catch (err) {
      // The caller gets no cluster to stop: stop what already runs (relay, agent), or it outlives the caller
      // (and keeps a test runner waiting on its pipes).
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  async writeAgentConfig(overrides: Record<string, unknown> = {}): Promise<void> {
    const config = {
      relay: this.relayAddress,
      caFingerprint: this.caFingerprint,
      stateDir: path.join(this.dir, 'agent-state'),
      enrollKey: this.enrollKey,
      name: this.deviceName,
      services: this.options.services,
      logLevel: this.options.logLevel ?? 'info',
      ...(this.options.agentTimers ? { timers: this.options.agentTimers } : {}),
      ...this.options.agentConfig,
      ...overrides,
    };
    await fs.writeFile(this.agentConfigFile, JSON.stringify(config, null, 2));
  }

  spawnCli(args: readonly string[], extraEnv: NodeJS.ProcessEnv = {}, nodeArgs: readonly string[] = [], launcher: readonly string[] = []): ManagedProcess {
    const [program, ...argv] = [...launcher, process.execPath, ...nodeArgs, PORTWAY_BIN, ...args];
    const child = spawn(program as string, argv, { env: { ...this.env, ...extraEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
    const proc = new ManagedProcess(child);
    this.children.add(proc);
    proc.exited.then(() => this.children.delete(proc), () => undefined);
    return proc;
  }

  runCli(args: readonly string[], options: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<CliResult> {
    const proc = this.spawnCli(args);
    proc.child.stdin?.end(options.input);
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    return proc.exited.then((code) => {
      clearTimeout(timer);
      return { code, stdout: proc.lines.join('\n') + (proc.lines.length ? '\n' : ''), stderr: proc.stderr };
    });
  }

  async mustRun(args: readonly string[]): Promise<CliResult> {
    const result = await this.runCli(args);
    if (result.code !== 0) throw new Error(`portway ${args.join(' ')} failed (${String(result.code)}): ${result.stderr}`);
    return result;
  }

  async startRelay(): Promise<ManagedProcess> {
    const relay = this.spawnCli(
      ['relay', '--data', this.relayDir, ...this.dbArgs, ...(this.options.relayBroker ? ['--broker', this.options.relayBroker] : []), '--listen', this.relayAddress, '--config', path.join(this.dir, 'relay.json'), '--log-level', this.options.logLevel ?? 'info'],
      this.options.relayEnv ?? {},
      this.options.relayNodeArgs,
      this.options.relayLauncher,
    );
    this.relay = relay;
    await relay.waitForLine(isEvent('relay.started'), 20_000, 'relay.started');
    return relay;
  }

  async startAgent(): Promise<ManagedProcess> {
    const agent = this.spawnCli(['agent', '--config', this.agentConfigFile]);
    this.agent = agent;
    await agent.waitForLine(isEvent('agent.control.online'), 30_000, 'agent.control.online');
    return agent;
  }

  /** Start `portway connect` and resolve with its local port. */
  async connect(service: string, device = this.deviceName): Promise<{ port: number; proc: ManagedProcess }> {
    const proc = this.spawnCli(['connect', device, service]);
    const line = await proc.waitForLine((l) => l.startsWith('listening on '), 30_000, 'connect to listen');
    const port = Number(/:(\d+) ->/.exec(line)?.[1]);
    return { port, proc };
  }

  /** Start `portway connect --udp` (extra CLI options in `args`) and resolve with its local UDP port. */
  async connectUdp(service: string, args: readonly string[] = [], device = this.deviceName): Promise<{ port: number; proc: ManagedProcess }> {
    const proc = this.spawnCli(['connect', device, service, '--udp', ...args]);
    const line = await proc.waitForLine((l) => l.startsWith('listening on udp '), 30_000, 'connect --udp to listen');
    const port = Number(/:(\d+) ->/.exec(line)?.[1]);
    return { port, proc };
  }

  async stop(): Promise<void> {
    await Promise.all([...this.children].map((c) => c.stop('SIGTERM', 5_000)));
  }
}

function readUnit(name: 'portway-relay.service' | 'portway-agent.service'): string {
  return readFileSync(path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../..' : '..', 'systemd', name), 'utf8');
}

/** The Node options systemd/portway-relay.service starts the relay with (between /usr/bin/node and the script). */
export function relayUnitNodeArgs(): string[] {
  const exec = /^ExecStart=\S*node((?:\s+--\S+)*)\s/m.exec(readUnit('portway-relay.service'));
  return exec?.[1]?.trim().split(/\s+/).filter(Boolean) ?? [];
}

/** The `Environment=KEY=VALUE` settings of a unit (one unquoted assignment per line, as ours are written). */
export function unitEnvironment(name: 'portway-relay.service' | 'portway-agent.service'): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of readUnit(name).matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(\S*)$/gm)) env[m[1] as string] = m[2] as string;
  return env;
}
