/**
 * Section 4, cold ssh: spawn to exit of `ssh … true` with nothing warm on the client side:
 *   - Portway: `ssh -o ProxyCommand='node dist/cli/portway.js pipe pi1 ssh' … true` (the device sshd is
 *     the agent's `ssh` service; a new `portway pipe` process per sample: Node start, relay TLS, stream);
 *   - ssh -J: `ssh -J bench-relay bench-device true` (two SSH handshakes with key auth).
 * Both authenticate to the same device sshd with AES-128-GCM. Samples alternate between the two paths.
 */
import { PORTWAY_BIN } from '../devtools';
import type { BenchContext } from './context';
import { DEVICE_NAME } from './environment';
import { NOTES_COLD } from './notes-baselines';
import { checkText, type ResultRow } from './report';
import { checkedRun } from './run-check';
import { SSH_CIPHER } from './ssh-jump';
import { summarize } from './stats';
import { spawnTracked } from './teardown';

const SAMPLE_TIMEOUT_MS = 30_000;

async function timeCommand(ctx: BenchContext, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  const proc = spawnTracked(ctx.teardown, 'ssh', args, { env });
  const timer = setTimeout(() => void proc.stop(), SAMPLE_TIMEOUT_MS);
  const { code, signal } = await proc.exited;
  clearTimeout(timer);
  const elapsed = performance.now() - started;
  if (code !== 0) throw new Error(`ssh exited ${code ?? signal ?? '?'}: ${proc.stderr().trim().slice(-300)}`);
  return elapsed;
}

export async function runColdStart(ctx: BenchContext): Promise<ResultRow[]> {
  const { env, options } = ctx;
  const pair = await env.ssh();
  const cluster = await env.cluster();
  const config = await env.sshConfig();
  const proxyCommand = `ProxyCommand=${process.execPath} ${PORTWAY_BIN} pipe ${DEVICE_NAME} ssh`;
  const portwayArgs = [...pair.device.sshOptions(), '-c', SSH_CIPHER, '-o', proxyCommand, 'bench-device', 'true'];
  const sshArgs = ['-F', config, '-c', SSH_CIPHER, '-J', 'bench-relay', 'bench-device', 'true'];
  const samples = { portway: [] as number[], sshJ: [] as number[] };
  const errors: string[] = [];
  const { check } = await checkedRun(ctx.quiet, () => new Map(), async () => {
    for (let i = 0; i < options.coldSamples; i++) {
      for (const key of ['sshJ', 'portway'] as const) {
        ctx.signal.throwIfAborted();
        try {
          samples[key].push(await timeCommand(ctx, key === 'sshJ' ? sshArgs : portwayArgs, key === 'sshJ' ? process.env : cluster.env));
        } catch (err) {
          errors.push(`${key}: ${(err as Error).message}`);
        }
      }
    }
  });
  const s = summarize(samples.sshJ);
  const p = summarize(samples.portway);
  ctx.progress(`cold: ssh -J median ${s.median.toFixed(1)} ms, portway pipe median ${p.median.toFixed(1)} ms ${checkText(check)}${errors.length ? `; errors: ${errors[0] ?? ''}` : ''}`);
  ctx.record('cold', { samples, errors, check });
  const failures = (key: 'sshJ' | 'portway'): string => {
    const count = errors.filter((e) => e.startsWith(key)).length;
    return count ? `; ${count} failed` : '';
  };
  const base = { section: 'cold' as const, measurement: `spawn → \`true\` exits, median [min–max] (n=${options.coldSamples})`, isContaminated: check.isContaminated };
  const text = (x: typeof s): string => (x.n ? `${x.median.toFixed(0)} ms [${x.min.toFixed(0)}–${x.max.toFixed(0)}]` : 'failed');
  return [
    { ...base, path: 'ssh -J relay device true', result: text(s), values: { medianMs: s.median, minMs: s.min, maxMs: s.max, n: s.n }, notes: NOTES_COLD.sshJ, check: checkText(check) + failures('sshJ') },
    {
      ...base,
      path: "ssh -o ProxyCommand='portway pipe pi1 ssh' true",
      result: text(p),
      values: { medianMs: p.median, minMs: p.min, maxMs: p.max, n: p.n },
      comparison: s.n && p.n ? `${(p.median / s.median).toFixed(2)}× ssh -J (${(p.median - s.median).toFixed(0)} ms)` : undefined,
      notes: NOTES_COLD.portway,
      check: checkText(check) + failures('portway'),
    },
  ];
}
