/** A started FaultProxy (see devtools/fault-proxy.ts) in front of `upstream`, stopped by the disposer. */
import { FaultProxy, type FaultProxyOptions, type HostPort } from '../../devtools';
import type { Disposer } from './disposer';

export interface StartedFaultProxy {
  readonly proxy: FaultProxy;
  readonly host: string;
  readonly port: number;
}

export async function startFaultProxy(
  disposer: Disposer,
  upstream: HostPort,
  options: Omit<FaultProxyOptions, 'listen' | 'upstream'> = {},
): Promise<StartedFaultProxy> {
  const proxy = new FaultProxy({ ...options, listen: { host: '127.0.0.1', port: 0 }, upstream });
  disposer.add(() => proxy.stop(), 'stop fault proxy');
  const { host, port } = await proxy.start();
  return { proxy, host, port };
}
