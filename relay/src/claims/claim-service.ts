/**
 * Claiming a device with a claim code (docs/security.md "Claim codes"), on the relay's side. The relay only
 * carries the claim: it never learns the code's secret part, so it cannot make either MAC.
 *
 *   device  POST /v1/claims/device/register {claimId,name,csr,pollToken}  -> pending row (expires after ttlMs)
 *   device  POST /v1/claims/device/wait     {claimId,pollToken}            long poll -> none | offer | claimed
 *   user    GET  /v1/claims/{claimId}                                      -> device key (the claimer MACs it)
 *   user    POST /v1/claims/{claimId}       {ownerKey,ownerTag,name?}      -> offered; waits for the device
 *   device  POST /v1/claims/device/answer   {offerId,ok,deviceTag|code}    (checked tagOwner, pinned the owner)
 *   relay   ok: certificate from the stored CSR, device row owned by the user, claimed  -> user gets deviceTag
 *           not ok / no answer in answerTimeoutMs: offer withdrawn, a failure counted
 *
 * Failures (unknown ID, wrong MAC, expired or used code) count against the source address and the user
 * (ClaimRateLimiter); past the limit, requests are refused with PW_RATE_LIMITED before any work. Every claim,
 * failure and lockout is appended to the audit log; refusals of an already locked source are only counted
 * in the log line, so a flood cannot flood the audit table.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type * as z from 'zod';
import { claimAnswerSchema, claimOfferSchema, claimRegisterSchema, claimWaitSchema, isClaimId, PortwayError, type ClaimWaitReply } from '../../../protocol';
import { parseSpkiBase64 } from '../../../shared/claim-tag';
import type { Logger } from '../../../shared/logger';
import { certFingerprint, parseCsr, spkiFingerprint } from '../../../shared/x509';
import type { CertificateAuthority } from '../pki';
import { newId, type Claim, type Store, type TokenAuth } from '../store';
import { ClaimRateLimiter } from './claim-rate-limiter';
import { ClaimWaiters } from './claim-waiters';
import type { ClaimMisbehaviour } from './claim-misbehaviour';

export interface ClaimOptions {
  readonly ttlMs: number;
  readonly answerTimeoutMs: number;
  readonly maxWaitMs: number;
  readonly pollMs: number;
  readonly maxSourceFailures: number;
  readonly maxUserFailures: number;
  readonly failureWindowMs: number;
  readonly deviceCertValidityMs: number;
}

const MAX_WAITERS = 10_000;
const MAX_TRACKED_KEYS = 100_000;

export class ClaimService {
  private readonly waiters = new ClaimWaiters(MAX_WAITERS);
  private readonly bySource: ClaimRateLimiter;
  private readonly byUser: ClaimRateLimiter;
  private readonly abort = new AbortController();
  private throttled = 0;

  constructor(
    private readonly deps: { log: Logger; store: Store; ca: CertificateAuthority; now: () => number; misbehaviour?: ClaimMisbehaviour },
    private readonly options: ClaimOptions,
  ) {
    this.bySource = new ClaimRateLimiter({ now: deps.now }, { maxFailures: options.maxSourceFailures, windowMs: options.failureWindowMs, maxKeys: MAX_TRACKED_KEYS });
    this.byUser = new ClaimRateLimiter({ now: deps.now }, { maxFailures: options.maxUserFailures, windowMs: options.failureWindowMs, maxKeys: MAX_TRACKED_KEYS });
  }

  stop(): void {
    this.abort.abort();
    this.waiters.wakeAll();
  }

  // ---- device side (no bearer: the claim ID and the device's poll token)

  async register(input: unknown, source: string): Promise<{ state: string; expiresAt: number }> {
    const body = parse(claimRegisterSchema, input);
    const csr = parseCsr(body.csr);
    if (await this.deps.store.findRevokedKey(spkiFingerprint(csr.publicKeySpkiDer))) throw new PortwayError('PW_DEVICE_REVOKED', 'this key belongs to a removed device; make a new key');
    const claim = await this.deps.store.registerClaim({
      claimId: body.claimId, name: body.name, csr: body.csr, deviceKey: csr.publicKeySpkiDer.toString('base64'), keyFingerprint: spkiFingerprint(csr.publicKeySpkiDer),
      pollHash: sha256(body.pollToken), expiresAt: this.deps.now() + this.options.ttlMs,
    });
    if (claim.state !== 'claimed' && claim.expiresAt <= this.deps.now()) throw new PortwayError('PW_CLAIM_EXPIRED', 'this claim code has expired');
    if (claim.createdAt === this.deps.now()) this.deps.log.info({ claimId: claim.claimId, source }, 'relay.claim.registered');
    return { state: claim.state, expiresAt: claim.expiresAt };
  }

  async wait(input: unknown): Promise<ClaimWaitReply> {
    const body = parse(claimWaitSchema, input);
    const deadline = this.deps.now() + Math.min(body.waitMs ?? this.options.maxWaitMs, this.options.maxWaitMs);
    for (;;) {
      const claim = await this.ownClaim(body.claimId, body.pollToken);
      if (claim.state === 'claimed' && claim.deviceId && claim.certificate) return { kind: 'claimed', deviceId: claim.deviceId, certificate: claim.certificate, caCertificate: this.deps.ca.certPem };
      if (claim.expiresAt <= this.deps.now()) throw new PortwayError('PW_CLAIM_EXPIRED', 'this claim code has expired');
      if (claim.state === 'offered' && claim.offer && !claim.offer.answer) {
        const ownerKey = this.deps.misbehaviour?.ownerKeyForDevice(claim.offer.ownerKey) ?? claim.offer.ownerKey;
        return { kind: 'offer', offerId: claim.offer.offerId, ownerKey, ownerTag: claim.offer.ownerTag };
      }
      const left = deadline - this.deps.now();
      if (left <= 0 || this.abort.signal.aborted) return { kind: 'none' };
      await this.waiters.wait(body.claimId, Math.min(left, this.options.pollMs), this.abort.signal);
    }
  }

  async answer(input: unknown): Promise<{ ok: true }> {
    const body = parse(claimAnswerSchema, input);
    await this.ownClaim(body.claimId, body.pollToken);
    if (body.ok && !body.deviceTag) throw new PortwayError('PW_BAD_REQUEST', 'deviceTag: required when ok');
    await this.deps.store.answerClaim(body.claimId, body.offerId, { ok: body.ok, ...(body.deviceTag ? { deviceTag: body.deviceTag } : {}), ...(body.code ? { code: body.code } : {}) });
    this.waiters.notify(body.claimId);
    return { ok: true };
  }

  // ---- claimer side (bearer)

  /** The pending device's key, which the claimer MACs with the code's secret. */
  async info(claimId: string, auth: TokenAuth, source: string): Promise<{ claimId: string; deviceKey: string; name: string; expiresAt: number }> {
    this.gate(auth, source);
    const claim = await this.usable(claimId, auth, source);
    const deviceKey = this.deps.misbehaviour?.deviceKeyForClaimer(claim.deviceKey) ?? claim.deviceKey;
    return { claimId: claim.claimId, deviceKey, name: claim.name, expiresAt: claim.expiresAt };
  }

  async claim(claimId: string, input: unknown, auth: TokenAuth, source: string): Promise<{ deviceId: string; name: string; deviceKey: string; deviceTag: string }> {
    this.gate(auth, source);
    const body = parse(claimOfferSchema, input);
    parseSpkiBase64(body.ownerKey);
    await this.usable(claimId, auth, source);
    const offerId = randomBytes(12).toString('base64url');
    const now = this.deps.now();
    const offered = await this.deps.store.offerClaim(claimId, { offerId, userId: auth.user.id, ownerKey: body.ownerKey, ownerTag: body.ownerTag, ...(body.name ? { name: body.name } : {}) }, now - 2 * this.options.answerTimeoutMs).catch((err: unknown) =>
      this.refused(err, claimId, auth, source),
    );
    this.waiters.notify(claimId);
    const answer = await this.awaitAnswer(claimId, offerId);
    if (!answer?.ok || !answer.deviceTag) {
      await this.deps.store.withdrawClaimOffer(claimId, offerId);
      if (answer && this.deps.misbehaviour) return this.deps.misbehaviour.forgedResult(offered);
      const error = answer
        ? new PortwayError('PW_CLAIM_BINDING_FAILED', 'the device refused the claim: the code does not match (or a key was changed on the way)')
        : new PortwayError('PW_DEVICE_OFFLINE', `the device did not answer the claim within ${this.options.answerTimeoutMs} ms; is it online?`);
      return this.refused(error, claimId, auth, source);
    }
    const name = offered.offer?.name ?? offered.name;
    const deviceId = newId('dev');
    const csr = parseCsr(offered.csr);
    const certificate = this.deps.ca.issueDeviceCert({ deviceId, name, publicKeySpkiDer: csr.publicKeySpkiDer, validityMs: this.options.deviceCertValidityMs });
    await this.deps.store.completeClaim(claimId, offerId, { id: deviceId, name, ownerUserId: auth.user.id, certFingerprint: certFingerprint(certificate), keyFingerprint: offered.keyFingerprint, certificate });
    this.waiters.notify(claimId);
    await this.deps.store.appendAudit({ actor: auth.user.id, action: 'device.claim', target: deviceId, source, outcome: 'ok' });
    this.deps.log.info({ claimId, deviceId, userId: auth.user.id }, 'relay.claim.done');
    const deviceKey = this.deps.misbehaviour?.deviceKeyForClaimer(offered.deviceKey) ?? offered.deviceKey;
    return { deviceId, name, deviceKey, deviceTag: answer.deviceTag };
  }

  // ---- internals

  private gate(auth: TokenAuth, source: string): void {
    try {
      this.bySource.check(source, 'address');
      this.byUser.check(auth.user.id, 'user');
    } catch (err) {
      this.throttled++;
      if (this.throttled % 1000 === 1) this.deps.log.warn({ source, userId: auth.user.id, throttled: this.throttled }, 'relay.claim.throttled');
      throw err;
    }
    if (auth.token.scope !== 'connect') throw new PortwayError('PW_SCOPE_INSUFFICIENT', `claiming needs a token with scope connect; this one is ${auth.token.scope}`);
  }

  /** The claim row when it can still be claimed; a counted failure otherwise. */
  private async usable(claimId: string, auth: TokenAuth, source: string): Promise<Claim> {
    const claim = isClaimId(claimId) ? await this.deps.store.getClaim(claimId) : undefined;
    if (!isClaimId(claimId)) return this.refused(new PortwayError('PW_CLAIM_CODE_INVALID', 'not the lookup part of a claim code'), 'invalid', auth, source);
    if (!claim) return this.refused(new PortwayError('PW_CLAIM_NOT_FOUND', 'no device is waiting to be claimed with this code'), claimId, auth, source);
    if (claim.state === 'claimed') return this.refused(new PortwayError('PW_CLAIM_USED', 'this claim code was already used'), claimId, auth, source);
    if (claim.expiresAt <= this.deps.now()) return this.refused(new PortwayError('PW_CLAIM_EXPIRED', 'this claim code has expired'), claimId, auth, source);
    return claim;
  }

  /** Audit a refused claim, count it against the source and the user (auditing a lockout once), rethrow. */
  private async refused(err: unknown, claimId: string, auth: TokenAuth, source: string): Promise<never> {
    const error = err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', 'claim failed', { cause: err });
    await this.deps.store.appendAudit({ actor: auth.user.id, action: 'device.claim', target: `claim:${claimId}`, source, outcome: error.code });
    if (error.code !== 'PW_CLAIM_IN_PROGRESS' && error.code !== 'PW_INTERNAL' && error.code !== 'PW_DEVICE_OFFLINE') {
      if (this.bySource.fail(source)) await this.deps.store.appendAudit({ actor: 'relay', action: 'claim.lockout', target: `source:${source}`.slice(0, 256), source, outcome: 'PW_RATE_LIMITED' });
      if (this.byUser.fail(auth.user.id)) await this.deps.store.appendAudit({ actor: 'relay', action: 'claim.lockout', target: auth.user.id, source, outcome: 'PW_RATE_LIMITED' });
    }
    this.deps.log.info({ claimId, userId: auth.user.id, source, code: error.code }, 'relay.claim.refused');
    throw error;
  }

  private async awaitAnswer(claimId: string, offerId: string): Promise<{ ok: boolean; deviceTag?: string } | undefined> {
    const deadline = this.deps.now() + this.options.answerTimeoutMs;
    for (;;) {
      const claim = await this.deps.store.getClaim(claimId);
      if (!claim?.offer || claim.offer.offerId !== offerId) return undefined;
      if (claim.offer.answer) return claim.offer.answer;
      const left = deadline - this.deps.now();
      if (left <= 0 || this.abort.signal.aborted) return undefined;
      await this.waiters.wait(claimId, Math.min(left, this.options.pollMs), this.abort.signal);
    }
  }

  /** The claim a device polls for: its poll token must match (else it looks missing). */
  private async ownClaim(claimId: string, pollToken: string): Promise<Claim> {
    const claim = await this.deps.store.getClaim(claimId);
    const given = Buffer.from(sha256(pollToken), 'hex');
    if (!claim || !timingSafeEqual(Buffer.from(claim.pollHash, 'hex'), given)) throw new PortwayError('PW_CLAIM_NOT_FOUND', 'no claim with this ID and poll token');
    return claim;
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function parse<T>(schema: z.ZodType<T>, input: unknown): T {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new PortwayError('PW_BAD_REQUEST', parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
  return parsed.data;
}
