/**
 * A device without an enrollment key gets its identity by being claimed (docs/security.md "Claim codes"):
 *
 *   1. its code: config claimCode, else its own (made once, kept in claim.json), shown on the console and in
 *      claimCodeFile on the boot partition, and in the log (agent.claim.code) only when neither could be written
 *   2. POST /v1/claims/device/register { claimId, name, csr, pollToken }: only the lookup part leaves the device
 *   3. long poll POST /v1/claims/device/wait until an offer or the certificate comes:
 *      offer: check tagOwner = HMAC(S, owner input) in constant time; pin the owner key (owners.json), answer
 *             tagDevice; a wrong MAC is answered { ok: false, PW_CLAIM_BINDING_FAILED } and the device waits on
 *      claimed: check the certificate is for this key, store it; the agent goes on starting (no restart)
 * With no certificate the device can do nothing else at the relay: no MQTT, no data sockets, no telemetry.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { claimWaitReplySchema, PortwayError, type ClaimWaitReply } from '../../../protocol';
import { claimTag, isClaimTagValid, parseSpkiBase64, spkiOfKeyPem } from '../../../shared/claim-tag';
import { apiRequest } from '../../../shared/https-json';
import type { Logger } from '../../../shared/logger';
import { writeFileAtomic } from '../../../shared/write-file-atomic';
import { certSpkiFingerprint, createCsr, describeCert, spkiFingerprint } from '../../../shared/x509';
import { addOwnerPin, clearClaim, loadOrMakeClaim, makeNewOwnClaim, type PendingClaimState } from './claim-state';

/** Longest long poll the device asks for. */
const WAIT_MS = 20_000;

export interface ClaimEnrollmentOptions {
  readonly stateDir: string;
  readonly relay: { host: string; port: number };
  readonly relayCaPem: string;
  readonly keyPem: string;
  readonly name: string;
  readonly claimCode?: string;
  readonly claimCodeFile: string;
  readonly claimConsole: string;
  readonly timeoutMs: number;
}

export async function enrollByClaim(deps: { log: Logger }, options: ClaimEnrollmentOptions): Promise<{ deviceId: string; certPem: string; caPem: string }> {
  const log = deps.log.child({ component: 'claim' });
  let claim = await loadOrMakeClaim(options.stateDir, options.claimCode);
  if (claim.isOwn) await showCode(log, options, claim);
  const deviceKey = spkiOfKeyPem(options.keyPem);
  const csr = createCsr({ privateKeyPem: options.keyPem, commonName: options.name });
  const call = <T>(route: string, body: unknown, timeoutMs = options.timeoutMs): Promise<T> =>
    apiRequest<T>({ relay: options.relay, caPem: options.relayCaPem, method: 'POST', path: `/v1/claims/device/${route}`, body, timeoutMs });

  for (;;) {
    try {
      const registered = await call<{ state: string; expiresAt: number }>('register', { claimId: claim.code.claimId, name: options.name, csr, pollToken: claim.pollToken });
      log.info({ claimId: claim.code.claimId, expiresAt: registered.expiresAt }, 'agent.claim.waiting');
      return await waitForClaim(log, options, claim, deviceKey, call);
    } catch (err) {
      // A code of its own that expired or clashes with another device's: make a new one and show it.
      if (claim.isOwn && err instanceof PortwayError && (err.code === 'PW_CLAIM_EXPIRED' || err.code === 'PW_CLAIM_ID_TAKEN')) {
        log.warn({ code: err.code }, 'agent.claim.code_replaced');
        claim = await makeNewOwnClaim(options.stateDir);
        await showCode(log, options, claim);
        continue;
      }
      throw err;
    }
  }
}

type Call = <T>(route: string, body: unknown, timeoutMs?: number) => Promise<T>;

async function waitForClaim(log: Logger, options: ClaimEnrollmentOptions, claim: PendingClaimState, deviceKey: Buffer, call: Call): Promise<{ deviceId: string; certPem: string; caPem: string }> {
  for (;;) {
    const raw = await call<unknown>('wait', { claimId: claim.code.claimId, pollToken: claim.pollToken, waitMs: WAIT_MS }, WAIT_MS + options.timeoutMs);
    const parsed = claimWaitReplySchema.safeParse(raw);
    if (!parsed.success) throw new PortwayError('PW_BAD_REQUEST', 'the relay sent a malformed claim reply');
    const reply: ClaimWaitReply = parsed.data;
    if (reply.kind === 'offer') {
      await answerOffer(log, options, claim, deviceKey, reply, (body) => call('answer', body));
    } else if (reply.kind === 'claimed') {
      const described = describeCert(reply.certificate);
      if (described.role !== 'device' || described.id !== reply.deviceId || certSpkiFingerprint(reply.certificate) !== spkiFingerprint(deviceKey)) {
        throw new PortwayError('PW_INTERNAL', 'relay returned a certificate for another identity');
      }
      const file = (n: string): string => path.join(options.stateDir, n);
      await writeFileAtomic(file('ca.crt'), reply.caCertificate, 0o644);
      await writeFileAtomic(file('device.crt'), reply.certificate, 0o644);
      await writeFileAtomic(file('device.json'), JSON.stringify({ deviceId: reply.deviceId }), 0o644);
      await clearClaim(options.stateDir);
      if (claim.isOwn) await fs.rm(options.claimCodeFile, { force: true }).catch(() => undefined);
      log.info({ deviceId: reply.deviceId }, 'agent.claim.done');
      return { deviceId: reply.deviceId, certPem: reply.certificate, caPem: reply.caCertificate };
    }
  }
}

async function answerOffer(
  log: Logger,
  options: ClaimEnrollmentOptions,
  claim: PendingClaimState,
  deviceKey: Buffer,
  offer: { offerId: string; ownerKey: string; ownerTag: string },
  send: (body: unknown) => Promise<unknown>,
): Promise<void> {
  const { claimId, secret } = claim.code;
  let ownerKey: Buffer | undefined;
  try {
    ownerKey = parseSpkiBase64(offer.ownerKey);
  } catch {
    ownerKey = undefined; // PW_BAD_REQUEST: answered as a failed binding below
  }
  const base = { claimId, pollToken: claim.pollToken, offerId: offer.offerId };
  if (!ownerKey || !isClaimTagValid(offer.ownerTag, secret, 'owner', claimId, deviceKey, ownerKey)) {
    log.warn({ code: 'PW_CLAIM_BINDING_FAILED', claimId }, 'agent.claim.binding_failed');
    await send({ ...base, ok: false, code: 'PW_CLAIM_BINDING_FAILED' });
    return;
  }
  const ownerFingerprint = spkiFingerprint(ownerKey);
  await addOwnerPin(options.stateDir, ownerFingerprint);
  log.info({ claimId, ownerKey: ownerFingerprint }, 'agent.claim.owner_pinned');
  await send({ ...base, ok: true, deviceTag: claimTag(secret, 'device', claimId, deviceKey, ownerKey).toString('base64') });
}

/**
 * Show the device's own code: in claimCodeFile and on the console (best effort: each may be missing or read-only).
 * The log names only the lookup part and where the code was shown; the whole code goes into the log only when
 * neither could be written (the packaged unit may write neither), since the journal is then the one place a
 * person can read it. A printed code (config claimCode) is never shown nor logged.
 */
async function showCode(log: Logger, options: ClaimEnrollmentOptions, claim: PendingClaimState): Promise<void> {
  const text = claim.code.text;
  const line = `Portway: claim this device with: portway claim ${text}\n`;
  const shownIn: string[] = [];
  await writeFileAtomic(options.claimCodeFile, line, 0o644).then(
    () => shownIn.push(options.claimCodeFile),
    (err: unknown) => log.warn({ code: (err as NodeJS.ErrnoException).code, file: options.claimCodeFile }, 'agent.claim.code_file_failed'),
  );
  if (options.claimConsole !== '') {
    await fs.writeFile(options.claimConsole, line, { flag: 'a' }).then(
      () => shownIn.push(options.claimConsole),
      (err: unknown) => log.debug({ code: (err as NodeJS.ErrnoException).code }, 'agent.claim.console_unwritable'),
    );
  }
  if (shownIn.length > 0) log.info({ claimId: claim.code.claimId, shownIn }, 'agent.claim.code');
  else log.warn({ claimId: claim.code.claimId, claimCode: text, shownIn }, 'agent.claim.code');
}
