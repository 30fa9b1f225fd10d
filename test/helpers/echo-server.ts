/** TCP echo server on 127.0.0.1:0, stopped by the disposer. */
import { type EchoServer, type EchoServerOptions, startEchoServer as start } from '../../devtools';
import type { Disposer } from './disposer';

export async function startEchoServer(disposer: Disposer, options: EchoServerOptions = {}): Promise<EchoServer> {
  const server = await start(options);
  disposer.add(() => server.stop(), 'stop echo server');
  return server;
}
