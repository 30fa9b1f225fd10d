/**
 * A network namespace made for one test, joined to the host by a veth pair with a /30 from 10.0.0.0/8 that
 * only the pair uses (picked at random, checked against the host's routes). Names are unique per call
 * (`pw-` + 6 hex digits; interfaces `pwh…` on the host, `pwn…` inside). Needs root (CAP_NET_ADMIN).
 * The namespace, and with it both veth ends, is deleted by the disposer, also when the set-up fails half way.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { Disposer } from './disposer';
import { runProcess } from './process';

export interface VethNamespace {
  readonly ns: string;
  readonly hostIf: string;
  readonly nsIf: string;
  /** The host end's address (reachable from inside the namespace while the link is up). */
  readonly hostAddress: string;
  /** The namespace end's address. */
  readonly nsAddress: string;
  /** The argv prefix that runs a program inside the namespace: `ip netns exec NS`. */
  readonly execPrefix: readonly string[];
  /** Take the namespace end of the link down or up. */
  setNsLink(state: 'up' | 'down'): Promise<void>;
}

async function ip(disposer: Disposer, args: readonly string[]): Promise<string> {
  const r = await runProcess(disposer, 'ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${String(r.code)}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** A /30 in 10.0.0.0/8 that no host route covers (bounded tries). */
async function pickSubnet(disposer: Disposer): Promise<[string, string]> {
  const routes = await ip(disposer, ['-4', 'route', 'show', 'table', 'all']);
  for (let i = 0; i < 20; i++) {
    const b = randomInt(200, 254);
    const c = randomInt(0, 256);
    const d = randomInt(0, 64) * 4;
    if (routes.includes(`10.${b}.`)) continue;
    return [`10.${b}.${c}.${d + 1}`, `10.${b}.${c}.${d + 2}`];
  }
  throw new Error('no free 10.x /30 found for the test namespace');
}

/** Creates the namespace with its link DOWN inside (the host end up, addresses on both ends, lo up). */
export async function createVethNamespace(disposer: Disposer): Promise<VethNamespace> {
  if (process.getuid?.() !== 0) throw new Error('network namespace tests need root (ip netns add, ip link add veth)');
  const id = randomBytes(3).toString('hex');
  const ns = `pw-${id}`;
  const hostIf = `pwh${id}`;
  const nsIf = `pwn${id}`;
  const [hostAddress, nsAddress] = await pickSubnet(disposer);
  await ip(disposer, ['netns', 'add', ns]);
  // Deleting the namespace deletes the veth end inside it and so the pair; the host end is deleted on its own
  // too in case the set-up failed before the move.
  disposer.add(async () => {
    const cleanup = new Disposer();
    try {
      await runProcess(cleanup, 'ip', ['link', 'del', hostIf], { timeoutMs: 5_000 }); // "Cannot find device" once the pair is gone
      const r = await runProcess(cleanup, 'ip', ['netns', 'del', ns], { timeoutMs: 5_000 });
      if (r.code !== 0) throw new Error(`ip netns del ${ns}: ${r.stderr.trim()}`);
    } finally {
      await cleanup.run();
    }
  }, `ip netns del ${ns}`);
  await ip(disposer, ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
  await ip(disposer, ['link', 'set', nsIf, 'netns', ns]);
  await ip(disposer, ['addr', 'add', `${hostAddress}/30`, 'dev', hostIf]);
  await ip(disposer, ['link', 'set', hostIf, 'up']);
  await ip(disposer, ['-n', ns, 'addr', 'add', `${nsAddress}/30`, 'dev', nsIf]);
  await ip(disposer, ['-n', ns, 'link', 'set', 'lo', 'up']);
  return {
    ns,
    hostIf,
    nsIf,
    hostAddress,
    nsAddress,
    execPrefix: ['ip', 'netns', 'exec', ns],
    setNsLink: async (state) => void (await ip(disposer, ['-n', ns, 'link', 'set', nsIf, state])),
  };
}
