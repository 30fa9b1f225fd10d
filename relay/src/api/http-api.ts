/**
 * The relay's management API (ALPN http/1.1 on the relay port). JSON in and out; errors are
 * `{ ok: false, code, message }` with a fitting HTTP status. Users authenticate with `Authorization: Bearer`.
 * A `read` token may use GET routes and log in (its certificate then cannot open streams); changes need
 * `connect`. Devices shared with a user are listed with only the services shared.
 *
 *   POST /v1/enroll      { enrollKey, name, csr }  -> { deviceId, certificate, caCertificate }     (no bearer)
 *   POST /v1/login       { csr }                   -> { userId, userName, certificate, caCertificate }
 *   GET  /v1/devices                               -> { devices: DeviceView[] }   (with the latest telemetry)
 *   GET  /v1/devices/:nameOrId                     -> DeviceView
 *   DELETE /v1/devices/:nameOrId                   device-routes.ts (remove = revoke the device)
 *   GET  /v1/ca                                    -> CA certificate (PEM)
 *   /v1/tokens…, /v1/shares…, /v1/audit             token-routes.ts, share-routes.ts, audit-routes.ts
 *   /v1/claims…                                      claim-routes.ts (the device's routes need no bearer)
 *   GET  /v1/health                                -> { ok: true }
 */
import http from 'node:http';
import * as z from 'zod';
import { ERRORS, nameSchema, PortwayError, type DeviceTelemetry, type ErrorCode } from '../../../protocol';
import type { Logger } from '../../../shared/logger';
import { parseCsr, spkiFingerprint, certFingerprint } from '../../../shared/x509';
import { canReach, reachableServices } from '../access';
import type { DeviceRegistry } from '../control/device-registry';
import type { CertificateAuthority } from '../pki';
import { newId, type Device, type Share, type Store, type TokenAuth, type User } from '../store';
import { dropConnection, type Connection } from '../tls-front';
import type { ApiRoutes } from './api-route';
import type { ClaimService } from '../claims/claim-service';
import { auditRoutes } from './audit-routes';
import { claimRoutes, deviceClaimRoute } from './claim-routes';
import { deviceRoutes } from './device-routes';
import { grantRoutes } from './grant-routes';
import type { GrantDelivery } from '../control/grant-delivery';
import type { DeviceRevocations } from '../control/device-revocations';
import { shareRoutes } from './share-routes';
import { tokenRoutes, type ClientStreams } from './token-routes';

const enrollSchema = z.object({ enrollKey: z.string().min(1).max(256), name: nameSchema, csr: z.string().min(1).max(8192) });
const loginSchema = z.object({ csr: z.string().min(1).max(8192) });

const STATUS_FOR: Partial<Record<ErrorCode, number>> = {
  PW_BAD_REQUEST: 400,
  PW_BAD_CSR: 400,
  PW_UNAUTHENTICATED: 401,
  PW_TOKEN_EXPIRED: 401,
  PW_TOKEN_REVOKED: 401,
  PW_SCOPE_INSUFFICIENT: 403,
  PW_ENROLL_KEY_INVALID: 403,
  PW_NOT_AUTHORIZED: 403,
  PW_NOT_FOUND: 404,
  PW_UNKNOWN_DEVICE: 404,
  PW_NAME_TAKEN: 409,
  PW_FRAME_TOO_LARGE: 413,
  PW_LIMIT_REACHED: 429,
  PW_SHUTTING_DOWN: 503,
  PW_CLAIM_CODE_INVALID: 400,
  PW_CLAIM_BINDING_FAILED: 403,
  PW_CLAIM_NOT_FOUND: 404,
  PW_CLAIM_USED: 409,
  PW_CLAIM_IN_PROGRESS: 409,
  PW_CLAIM_ID_TAKEN: 409,
  PW_CLAIM_EXPIRED: 410,
  PW_RATE_LIMITED: 429,
  PW_DEVICE_REVOKED: 403,
  PW_GRANT_INVALID: 400,
  PW_GRANT_STALE: 409,
};

export interface HttpApiOptions {
  readonly maxBodyBytes: number;
  readonly requestTimeoutMs: number;
  readonly deviceCertValidityMs: number;
  readonly userCertValidityMs: number;
}

export interface DeviceView {
  readonly id: string;
  readonly name: string;
  readonly online: boolean;
  readonly services: readonly { name: string; type: string }[];
  readonly keyFingerprint: string;
  readonly version?: string;
  readonly lastSeenAt?: number;
  readonly owner?: string;
  /** The latest telemetry sample and when the relay received it (relay clock). */
  readonly telemetry?: DeviceTelemetry;
  readonly telemetryReceivedAt?: number;
}

export class HttpApi {
  private readonly server: http.Server;
  private readonly routes: readonly ApiRoutes[];
  /** Connections that have not started a request yet, and their deadline. */
  private readonly awaitingRequest = new WeakMap<object, NodeJS.Timeout>();

  constructor(
    private readonly deps: { log: Logger; store: Store; ca: CertificateAuthority; registry: DeviceRegistry; claims?: ClaimService; revocations?: DeviceRevocations; grants?: GrantDelivery; streams?: ClientStreams },
    private readonly options: HttpApiOptions,
  ) {
    // Node checks the request and header deadlines every connectionsCheckingInterval (30 s by default): check
    // every second so a trickling client is cut close to requestTimeoutMs.
    this.server = http.createServer({ requestTimeout: options.requestTimeoutMs, headersTimeout: options.requestTimeoutMs, maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.routes = [tokenRoutes({ store: deps.store, now: Date.now, streams: deps.streams }), shareRoutes({ store: deps.store, streams: deps.streams }), auditRoutes({ store: deps.store }), ...(deps.claims ? [claimRoutes(deps.claims)] : []), ...(deps.revocations ? [deviceRoutes({ store: deps.store, revocations: deps.revocations })] : []),
      grantRoutes({ store: deps.store, delivery: deps.grants, now: Date.now, userCertValidityMs: options.userCertValidityMs })];
    this.server.on('request', (req: http.IncomingMessage) => clearTimeout(this.awaitingRequest.get(req.socket)));
    this.server.on('clientError', (err, socket) => {
      this.deps.log.info({ code: (err as NodeJS.ErrnoException).code }, 'relay.http.client_error');
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  handleConnection(conn: Connection): void {
    // Node's deadlines start with a request; a connection that never sends one is cut here.
    const idle = setTimeout(() => {
      this.deps.log.info({ remote: conn.remote, code: 'PW_HANDSHAKE_TIMEOUT', reason: 'no request' }, 'relay.http.idle_closed');
      dropConnection(conn);
    }, this.options.requestTimeoutMs);
    idle.unref();
    this.awaitingRequest.set(conn.tls, idle);
    conn.tls.once('close', () => clearTimeout(idle));
    this.server.emit('connection', conn.tls);
  }

  stop(): void {
    this.server.closeAllConnections();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://relay');
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    if (route === 'GET /v1/health') return this.send(res, 200, { ok: true });
    if (route === 'GET /v1/ca') {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' });
      res.end(this.deps.ca.certPem);
      return;
    }
    if (route === 'POST /v1/enroll') return this.enroll(req, res);
    const deviceClaim = this.deps.claims && (await deviceClaimRoute(this.deps.claims, { method: req.method ?? 'GET', path: url.pathname, source: req.socket.remoteAddress ?? '?', body: () => this.readJson(req) }));
    if (deviceClaim) return this.send(res, deviceClaim.status, deviceClaim.body);
    const auth = await this.authenticate(req);
    const user = auth.user;
    if (route === 'POST /v1/login') return this.login(req, res, auth);
    if (route === 'GET /v1/devices') {
      const devices = await this.reachable(user, await this.deps.store.listDevices());
      return this.send(res, 200, { devices: devices.map(({ device, share }) => this.sharedView(user, device, share)) });
    }
    const deviceMatch = /^GET \/v1\/devices\/([^/]{1,64})$/.exec(route);
    if (deviceMatch) {
      const found = await this.reachable(user, await this.deps.store.findDevices(decodeURIComponent(deviceMatch[1] as string)));
      if (found.length === 0) throw new PortwayError('PW_UNKNOWN_DEVICE');
      if (found.length > 1) throw new PortwayError('PW_BAD_REQUEST', 'several devices have this name; use the device ID');
      const { device, share } = found[0] as { device: Device; share?: Share };
      return this.send(res, 200, this.sharedView(user, device, share));
    }
    for (const routes of this.routes) {
      const reply = await routes({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, auth, source: req.socket.remoteAddress ?? '?', body: () => this.readJson(req) });
      if (reply) return this.send(res, reply.status, reply.body);
    }
    throw new PortwayError('PW_NOT_FOUND', `no such API route: ${route.slice(0, 100)}`);
  }

  private view(d: Device): DeviceView {
    const info = this.deps.registry.info(d.id);
    return {
      id: d.id,
      name: d.name,
      online: info.online,
      services: info.services,
      keyFingerprint: d.keyFingerprint,
      version: info.version,
      lastSeenAt: info.lastSeenAt,
      owner: d.ownerUserId,
      telemetry: info.telemetry?.telemetry,
      telemetryReceivedAt: info.telemetry?.receivedAt,
    };
  }

  /** The devices this user may reach, each with its share when reached through one. */
  private async reachable(user: User, devices: readonly Device[]): Promise<{ device: Device; share?: Share }[]> {
    const shares = user.isAdmin ? [] : await this.deps.store.listShares({ userId: user.id });
    return devices.flatMap((device) => {
      const share = shares.find((s) => s.deviceId === device.id);
      return canReach(user, device, share) ? [{ device, ...(share ? { share } : {}) }] : [];
    });
  }

  /** A device's view with only the services this user may reach. */
  private sharedView(user: User, device: Device, share: Share | undefined): DeviceView {
    const view = this.view(device);
    return { ...view, services: reachableServices(user, device, share, view.services) };
  }

  private async enroll(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = enrollSchema.safeParse(await this.readJson(req));
    if (!body.success) throw new PortwayError('PW_BAD_REQUEST', describeIssues(body.error));
    const csr = parseCsr(body.data.csr);
    if (csr.commonName !== body.data.name) throw new PortwayError('PW_BAD_CSR', 'the CSR names another device than the request (its common name must be the device name)');
    const revoked = await this.deps.store.findRevokedKey(spkiFingerprint(csr.publicKeySpkiDer));
    if (revoked) {
      await this.deps.store.appendAudit({ actor: 'relay', action: 'device.enroll', target: revoked.id, source: req.socket.remoteAddress ?? '?', outcome: 'PW_DEVICE_REVOKED' });
      throw new PortwayError('PW_DEVICE_REVOKED', 'this key belongs to a removed device; make a new key');
    }
    const use = await this.deps.store.consumeEnrollKey(body.data.enrollKey);
    const deviceId = newId('dev');
    const certificate = this.deps.ca.issueDeviceCert({ deviceId, name: body.data.name, publicKeySpkiDer: csr.publicKeySpkiDer, validityMs: this.options.deviceCertValidityMs });
    await this.deps.store.createDevice({
      id: deviceId,
      name: body.data.name,
      ownerUserId: use.ownerUserId,
      certFingerprint: certFingerprint(certificate),
      keyFingerprint: spkiFingerprint(csr.publicKeySpkiDer),
    });
    await this.deps.store.appendAudit({ actor: use.keyId, action: 'device.enroll', target: deviceId, source: req.socket.remoteAddress ?? '?', outcome: 'ok' });
    this.deps.log.info({ deviceId, keyId: use.keyId }, 'relay.device.enrolled');
    this.send(res, 200, { deviceId, certificate, caCertificate: this.deps.ca.certPem });
  }

  /**
   * Issue a user certificate bound to the token used: the store records the token with it, so the data plane
   * applies the token's scope, expiry and revocation to the certificate at every stream open (and says which).
   */
  private async login(req: http.IncomingMessage, res: http.ServerResponse, auth: TokenAuth): Promise<void> {
    const { user, token } = auth;
    const body = loginSchema.safeParse(await this.readJson(req));
    if (!body.success) throw new PortwayError('PW_BAD_REQUEST', describeIssues(body.error));
    const csr = parseCsr(body.data.csr);
    const certificate = this.deps.ca.issueUserCert({ userId: user.id, name: user.name, publicKeySpkiDer: csr.publicKeySpkiDer, validityMs: this.options.userCertValidityMs });
    await this.deps.store.recordUserCert(user.id, certFingerprint(certificate), spkiFingerprint(csr.publicKeySpkiDer), { tokenId: token.id });
    await this.deps.store.appendAudit({ actor: user.id, action: 'user.login', target: token.id, source: req.socket.remoteAddress ?? '?', outcome: 'ok' });
    this.deps.log.info({ userId: user.id, tokenId: token.id, scope: token.scope }, 'relay.user.certificate_issued');
    this.send(res, 200, { userId: user.id, userName: user.name, certificate, caCertificate: this.deps.ca.certPem });
  }

  /** The bearer token's user and scope; PW_UNAUTHENTICATED, PW_TOKEN_EXPIRED or PW_TOKEN_REVOKED. */
  private authenticate(req: http.IncomingMessage): Promise<TokenAuth> {
    const match = /^Bearer ([A-Za-z0-9_-]{1,200})$/.exec(req.headers.authorization ?? '');
    if (!match) return Promise.reject(new PortwayError('PW_UNAUTHENTICATED', 'missing or invalid API token'));
    return this.deps.store.authenticateToken(match[1] as string);
  }

  private readJson(req: http.IncomingMessage): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > this.options.maxBodyBytes) {
          // Keep nothing more, but read the rest (requestTimeoutMs bounds it): destroying the request here
          // would reset the connection, and the client would never see the 413.
          req.off('data', onData);
          chunks.length = 0;
          req.resume();
          reject(new PortwayError('PW_FRAME_TOO_LARGE', `request body exceeds ${this.options.maxBodyBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      };
      req.on('data', onData);
      req.on('end', () => {
        if (size > this.options.maxBodyBytes) return;
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (err) {
          reject(new PortwayError('PW_BAD_REQUEST', 'request body is not valid JSON', { cause: err }));
        }
      });
      req.on('error', (err) => reject(new PortwayError('PW_BAD_REQUEST', 'request body could not be read', { cause: err })));
    });
  }

  private send(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    const error = err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', 'internal error', { cause: err });
    if (error.code === 'PW_INTERNAL') this.deps.log.error({ err }, 'relay.http.failed');
    else this.deps.log.info({ code: error.code, reason: error.message }, 'relay.http.refused');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = STATUS_FOR[error.code] ?? (ERRORS[error.code].retryable ? 503 : 400);
    // A throttled client keeps its connection: refusing it costs one small answer, not a TLS handshake.
    if (error.code !== 'PW_RATE_LIMITED') res.setHeader('connection', 'close');
    this.send(res, error.code === 'PW_INTERNAL' ? 500 : status, error.toWire());
  }
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
}
