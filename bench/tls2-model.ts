/**
 * The "node-tls2" model from the baseline notes, measured in the same run as Portway: the least a relayed,
 * doubly encrypted Node data path can cost on this machine. Three processes, as in Portway:
 *
 *   app -> fwd ═TLS═> relay <═TLS═ agent -> server       inner TLS 1.3 fwd <-> agent inside the outer TLS
 *
 * - agent: keeps POOL outer TLS sockets open to the relay's agent port; on each it runs an inner TLS server
 *   (`new TLSSocket(outer, {isServer})`), and once the inner handshake is done connects to the target and
 *   pipes. Every used socket is replaced.
 * - relay: takes agent sockets into a queue; each client connection is paired with the next one by
 *   `pipe()` both ways (outer TLS decrypt + encrypt, no inner keys).
 * - fwd: accepts local TCP, opens outer TLS to the relay's client port, inner TLS over it, pipes.
 *
 * Same crypto as Portway (TLS 1.3, P-256 ECDSA certificates, AES-128-GCM first), mutual auth on the inner
 * session, no framing, no control plane, no error handling beyond teardown: a floor, not a product.
 *
 * Usage: node tls2-model.js relay CERTDIR AGENT_PORT CLIENT_PORT      (0 = any free port)
 *        node tls2-model.js agent CERTDIR RELAY_AGENT_PORT TARGET_PORT
 *        node tls2-model.js fwd   CERTDIR RELAY_CLIENT_PORT LISTEN_PORT
 * Listeners print their ports as one JSON line on stdout. `startTls2Model` runs all three for the bench.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { tlsCipherOptions } from '../shared/tls-profile';
import { spawnTracked, type Teardown, type TrackedChild } from './teardown';

const POOL = 16;
const HOST = '127.0.0.1';

export function makeModelCerts(dir: string): void {
  for (const name of ['relay', 'agent', 'fwd']) {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', `/CN=model-${name}`, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`),
    ], { stdio: 'ignore' });
  }
}

function creds(dir: string, name: string): { key: Buffer; cert: Buffer } {
  return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.crt`)) };
}

function pipeBoth(a: net.Socket, b: net.Socket): void {
  const down = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', down).on('close', down);
  b.on('error', down).on('close', down);
  a.pipe(b);
  b.pipe(a);
}

function listening(server: net.Server): Promise<number> {
  return once(server, 'listening').then(() => (server.address() as net.AddressInfo).port);
}

async function relay(dir: string, agentPort: number, clientPort: number): Promise<void> {
  const context = tls.createSecureContext({ ...creds(dir, 'relay'), ...tlsCipherOptions() });
  const idle: tls.TLSSocket[] = [];
  const waiting: tls.TLSSocket[] = [];
  const pair = (): void => {
    while (idle.length > 0 && waiting.length > 0) pipeBoth(waiting.shift() as tls.TLSSocket, idle.shift() as tls.TLSSocket);
  };
  const server = (port: number, onSecure: (socket: tls.TLSSocket) => void): Promise<number> => {
    const srv = net.createServer({ noDelay: true }, (raw) => {
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: context });
      socket.on('error', () => raw.destroy());
      socket.once('secure', () => onSecure(socket));
    });
    srv.listen(port, HOST);
    return listening(srv);
  };
  const agents = server(agentPort, (socket) => {
    idle.push(socket);
    socket.once('close', () => idle.includes(socket) && idle.splice(idle.indexOf(socket), 1));
    pair();
  });
  const clients = server(clientPort, (socket) => {
    waiting.push(socket);
    pair();
  });
  process.stdout.write(`${JSON.stringify({ agentPort: await agents, clientPort: await clients })}\n`);
}

function agent(dir: string, relayPort: number, targetPort: number): void {
  const mine = creds(dir, 'agent');
  const inner = tls.createSecureContext({ ...mine, ca: readFileSync(join(dir, 'fwd.crt')), ...tlsCipherOptions() });
  const open = (): void => {
    const outer = tls.connect({ host: HOST, port: relayPort, ca: readFileSync(join(dir, 'relay.crt')), checkServerIdentity: () => undefined, ...tlsCipherOptions() });
    outer.setNoDelay(true);
    outer.on('error', () => outer.destroy());
    outer.once('secure', () => {
      const session = new tls.TLSSocket(outer, { isServer: true, secureContext: inner, requestCert: true, rejectUnauthorized: true });
      session.on('error', () => outer.destroy());
      session.once('secure', () => {
        open();
        const target = net.connect({ host: HOST, port: targetPort, noDelay: true });
        pipeBoth(session, target);
      });
    });
  };
  for (let i = 0; i < POOL; i++) open();
}

async function fwd(dir: string, relayPort: number, listenPort: number): Promise<void> {
  const relayCa = readFileSync(join(dir, 'relay.crt'));
  const mine = creds(dir, 'fwd');
  const agentCa = readFileSync(join(dir, 'agent.crt'));
  const srv = net.createServer({ noDelay: true }, (local) => {
    local.pause();
    const outer = tls.connect({ host: HOST, port: relayPort, ca: relayCa, checkServerIdentity: () => undefined, ...tlsCipherOptions() });
    outer.setNoDelay(true);
    outer.on('error', () => local.destroy());
    outer.once('secure', () => {
      const session = tls.connect({ socket: outer, ...mine, ca: agentCa, checkServerIdentity: () => undefined, ...tlsCipherOptions() });
      session.on('error', () => local.destroy());
      session.once('secure', () => {
        pipeBoth(local, session);
        local.resume();
      });
    });
  });
  srv.listen(listenPort, HOST);
  process.stdout.write(`${JSON.stringify({ port: await listening(srv) })}\n`);
}

if (require.main === module) {
  const [role, dir, a, b] = process.argv.slice(2);
  if (!dir || !a || !b) throw new Error('usage: tls2-model.js relay|agent|fwd CERTDIR PORT PORT');
  const roles: Record<string, (d: string, x: number, y: number) => void | Promise<void>> = { relay, agent, fwd };
  const run = roles[role ?? ''];
  if (!run) throw new Error(`unknown role ${role}`);
  void run(dir, Number(a), Number(b));
}

export interface Tls2Model {
  readonly port: number;
  /** pid -> role, for the CPU columns. */
  readonly roles: Map<number, string>;
}

/** Start the three model processes (stopped by the teardown) in front of `targetPort`. */
export async function startTls2Model(teardown: Teardown, dir: string, targetPort: number): Promise<Tls2Model> {
  makeModelCerts(dir);
  const spawnRole = async (role: string, a: number, b: number): Promise<{ child: TrackedChild; info: Record<string, number> }> => {
    const child = spawnTracked(teardown, process.execPath, [__filename, role, dir, String(a), String(b)]);
    if (role === 'agent') return { child, info: {} };
    const line = await waitForFirstLine(child, 10_000);
    return { child, info: JSON.parse(line) as Record<string, number> };
  };
  const relayProc = await spawnRole('relay', 0, 0);
  const agentProc = await spawnRole('agent', relayProc.info.agentPort as number, targetPort);
  const fwdProc = await spawnRole('fwd', relayProc.info.clientPort as number, 0);
  const roles = new Map<number, string>([
    [relayProc.child.child.pid ?? -1, 'relay'],
    [agentProc.child.child.pid ?? -1, 'agent'],
    [fwdProc.child.child.pid ?? -1, 'fwd'],
  ]);
  // The agent's pool is open once a connection through the model works.
  await new Promise((resolve) => setTimeout(resolve, 500));
  return { port: fwdProc.info.port as number, roles };
}

function waitForFirstLine(child: TrackedChild, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const out = child.stdout();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearInterval(poll);
        resolve(out.slice(0, nl));
      } else if (Date.now() - started > timeoutMs || child.child.exitCode !== null) {
        clearInterval(poll);
        reject(new Error(`tls2 model did not start: ${child.stderr().slice(-500)}`));
      }
    }, 20);
  });
}
