/**
 * Who a claimed device lets in: its pinned owner keys (owners.json, claim-state.ts) for everything, and the keys
 * its owner granted in the latest signed grant set (protocol/grants.ts) for the services granted, until their
 * expiry. The grant set comes from the relay (`grants` command) but is trusted only after its signature verifies
 * under a pinned owner key; one whose sequence number is not above the held one is refused (PW_GRANT_STALE), so a
 * relay cannot roll grants back. Kept in the state directory:
 *
 *   grants.json (0644)  the SignedGrantSet as received (re-verified at start; written atomically)
 *
 * A damaged or no longer verifying grants.json is logged (`agent.grants.load_refused`) and ignored: the device
 * then admits its owner keys only until the relay delivers a set again.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { grantedServices, PortwayError, type GrantDocument } from '../../../protocol';
import { verifyGrantSet } from '../../../shared/grant-signature';
import type { Logger } from '../../../shared/logger';
import { writeFileAtomic } from '../../../shared/write-file-atomic';

export type AccessDecision =
  | { readonly ok: true; readonly via: 'owner' | 'grant' }
  | { readonly ok: false; readonly error: PortwayError };

export interface GrantOfferResult {
  readonly seq: number;
  /** False when the set is the one already held (the relay sends it again at each session). */
  readonly changed: boolean;
}

export class GrantBook {
  private current: { document: GrantDocument; text: string } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: { log: Logger },
    private readonly options: { stateDir: string; deviceId: string; ownerKeys: ReadonlySet<string> },
  ) {}

  get seq(): number {
    return this.current?.document.seq ?? 0;
  }

  get file(): string {
    return path.join(this.options.stateDir, 'grants.json');
  }

  async load(): Promise<void> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      const verified = verifyGrantSet(parseJson(text), this.options);
      this.current = { document: verified.document, text };
      this.deps.log.info({ seq: verified.document.seq, entries: verified.document.entries.length }, 'agent.grants.loaded');
    } catch (err) {
      if (!(err instanceof PortwayError)) throw err;
      this.deps.log.error({ code: err.code, reason: err.message, file: this.file }, 'agent.grants.load_refused');
    }
  }

  /** A grant set from the relay: verified, newer than the held one, then written and used. PW_GRANT_INVALID, PW_GRANT_STALE. */
  offer(value: unknown): Promise<GrantOfferResult> {
    const run = this.queue.then(() => this.accept(value));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async accept(value: unknown): Promise<GrantOfferResult> {
    const verified = verifyGrantSet(value, this.options);
    const text = JSON.stringify(value);
    const held = this.current;
    if (held && verified.document.seq <= held.document.seq) {
      if (verified.document.seq === held.document.seq && sameDocument(held.text, text)) return { seq: held.document.seq, changed: false };
      throw new PortwayError('PW_GRANT_STALE', `grant set ${verified.document.seq} is not newer than the held ${held.document.seq}`);
    }
    await writeFileAtomic(this.file, text, 0o644);
    this.current = { document: verified.document, text };
    return { seq: verified.document.seq, changed: true };
  }

  /** The earliest grant expiry after `now`, if any. */
  nextExpiry(now: number): number | undefined {
    let next: number | undefined;
    for (const e of this.current?.document.entries ?? []) if (e.expiresAt !== undefined && e.expiresAt > now && (next === undefined || e.expiresAt < next)) next = e.expiresAt;
    return next;
  }

  /** May the user key `key` (SPKI SHA-256) reach `service` at `now`? */
  decide(key: string, service: string, now: number): AccessDecision {
    if (this.options.ownerKeys.has(key)) return { ok: true, via: 'owner' };
    const document = this.current?.document;
    const granted = document ? grantedServices(document, key, now) : undefined;
    if (granted === 'all' || granted?.has(service)) return { ok: true, via: 'grant' };
    if (document?.entries.some((e) => e.key === key)) {
      return { ok: false, error: new PortwayError('PW_E2E_NOT_GRANTED', `the owner has not granted this key ${service}, or the grant expired`) };
    }
    return { ok: false, error: new PortwayError('PW_E2E_OWNER_KEY_MISMATCH', 'this device accepts only its owner keys and keys its owner granted') };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new PortwayError('PW_GRANT_INVALID', 'grants.json is not JSON', { cause: err });
  }
}

/** The same signed set (the relay may re-serialise the envelope, never the signed document inside). */
function sameDocument(a: string, b: string): boolean {
  const docA = (JSON.parse(a) as { document?: unknown }).document;
  const docB = (JSON.parse(b) as { document?: unknown }).document;
  return typeof docA === 'string' && docA === docB;
}
