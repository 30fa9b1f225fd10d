/** JSON over HTTPS to the relay's management API (ALPN http/1.1), with a deadline and coded errors. */
import https from 'node:https';
import { ALPN_HTTP, errorFromWire, PortwayError } from '../protocol';
import { isIpLiteral, relayTlsError } from './relay-trust';

export interface ApiRequest {
  readonly relay: { host: string; port: number };
  readonly caPem: string;
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly body?: unknown;
  readonly token?: string;
  readonly timeoutMs: number;
}

const MAX_RESPONSE_BYTES = 1024 * 1024;

export function apiRequest<T>(req: ApiRequest): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const body = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(body.length);
    }
    if (req.token) headers.authorization = `Bearer ${req.token}`;
    const relayName = `${req.relay.host}:${req.relay.port}`;
    const options: https.RequestOptions & { ALPNProtocols: string[] } = {
        host: req.relay.host,
        port: req.relay.port,
        method: req.method,
        path: req.path,
        headers,
        ca: req.caPem,
        servername: isIpLiteral(req.relay.host) ? undefined : req.relay.host,
        ALPNProtocols: [ALPN_HTTP],
        agent: false,
        timeout: req.timeoutMs,
      };
    const r = https.request(options, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            r.destroy(new PortwayError('PW_BAD_REQUEST', 'relay response too large'));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch (err) {
            reject(new PortwayError('PW_INTERNAL', `relay answered ${res.statusCode ?? '?'} with a body that is not JSON`, { cause: err }));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const failure = json as { code?: unknown; message?: unknown };
            reject(errorFromWire(failure.code, failure.message));
          } else resolve(json as T);
        });
        res.on('error', (err) => reject(new PortwayError('PW_RELAY_UNREACHABLE', 'relay response failed', { cause: err })));
      });
    r.on('timeout', () => r.destroy(new PortwayError('PW_RELAY_UNREACHABLE', `relay ${relayName} did not answer within ${req.timeoutMs} ms`)));
    r.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof PortwayError ? err : relayTlsError(err, relayName)));
    r.end(body);
  });
}
