/**
 * The floor under the relay's memory per agent, measured in the same run: a bare Node TLS server that does
 * what the relay's TLS front does for each control connection (TLSSocket around the accepted TCP socket,
 * TLS 1.3, a P-256 server certificate, a requested and read client certificate) and nothing else, holding
 * N idle connections from a client process. Per connection = (RSS_N - RSS_0) / N, with the same Node
 * options as the relay.
 *
 *   node tls-floor.js server CERTDIR        prints {"port":P}; on stdin "rss" prints {"rssKiB":R}
 *   node tls-floor.js client CERTDIR PORT N  opens N connections, prints {"open":N}, holds them until stdin ends
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { tlsCipherOptions } from '../shared/tls-profile';
import { readRssKiB } from './proc-stats';
import { spawnTracked, type Teardown, type TrackedChild } from './teardown';
import { makeModelCerts } from './tls2-model';

const SETTLE_MS = 3_000;
const STEP_TIMEOUT_MS = 120_000;

function server(dir: string): void {
  const context = tls.createSecureContext({ key: readFileSync(join(dir, 'relay.key')), cert: readFileSync(join(dir, 'relay.crt')), ...tlsCipherOptions() });
  const held = new Set<tls.TLSSocket>();
  const srv = net.createServer((raw) => {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false });
    socket.on('error', () => raw.destroy());
    socket.once('secure', () => socket.getPeerX509Certificate());
    held.add(socket);
    socket.once('close', () => held.delete(socket));
  });
  srv.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (srv.address() as net.AddressInfo).port })}\n`));
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'rss') process.stdout.write(`${JSON.stringify({ rssKiB: readRssKiB(process.pid), held: held.size })}\n`);
  });
  process.stdin.once('end', () => process.exit(0));
}

async function client(dir: string, port: number, n: number): Promise<void> {
  const creds = { key: readFileSync(join(dir, 'fwd.key')), cert: readFileSync(join(dir, 'fwd.crt')) };
  const open: tls.TLSSocket[] = [];
  for (let i = 0; i < n; i++) {
    const socket = tls.connect({ host: '127.0.0.1', port, ...creds, rejectUnauthorized: false, ...tlsCipherOptions() });
    await once(socket, 'secureConnect');
    open.push(socket);
  }
  process.stdout.write(`${JSON.stringify({ open: open.length })}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0));
}

if (require.main === module) {
  const [role, dir, port, n] = process.argv.slice(2);
  if (role === 'server' && dir) server(dir);
  else if (role === 'client' && dir && port && n) void client(dir, Number(port), Number(n));
  else throw new Error('usage: tls-floor.js server DIR | client DIR PORT N');
}

/** Wait for the next JSON line on the child's stdout that has `key`. */
async function lineWith(child: TrackedChild, key: string, after: number): Promise<{ value: Record<string, number>; at: number }> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const lines = child.stdout().split('\n');
    for (let i = after; i < lines.length - 1; i++) {
      const json = JSON.parse(lines[i] as string) as Record<string, number>;
      if (key in json) return { value: json, at: i + 1 };
    }
    if (Date.now() > deadline || child.child.exitCode !== null) throw new Error(`tls floor: no ${key} (${child.stderr().slice(-300)})`);
    await new Promise((r) => setTimeout(r, 50)); // poll interval of a bounded wait
  }
}

/** KiB of server RSS per idle mutual-TLS connection, with `nodeArgs` and `env` (added) for the server process. */
export async function measureTlsFloor(teardown: Teardown, dir: string, n: number, nodeArgs: readonly string[], env: Readonly<Record<string, string>> = {}): Promise<number> {
  makeModelCerts(dir);
  const srv = spawnTracked(teardown, process.execPath, [...nodeArgs, __filename, 'server', dir], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const { value: listening, at } = await lineWith(srv, 'port', 0);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  srv.child.stdin?.write('rss\n');
  const base = await lineWith(srv, 'rssKiB', at);
  const cli = spawnTracked(teardown, process.execPath, [__filename, 'client', dir, String(listening.port), String(n)], { stdio: ['pipe', 'pipe', 'pipe'] });
  await lineWith(cli, 'open', 0);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  srv.child.stdin?.write('rss\n');
  const loaded = await lineWith(srv, 'rssKiB', base.at);
  cli.child.stdin?.end();
  srv.child.stdin?.end();
  await Promise.all([cli.stop(), srv.stop()]);
  return ((loaded.value.rssKiB as number) - (base.value.rssKiB as number)) / n;
}
