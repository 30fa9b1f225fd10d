/**
 * What a device keeps about claiming, in its state directory:
 *   claim.json  (0600)  { code, pollToken, isOwn }: the code it waits to be claimed with (isOwn: it made the
 *                       code itself) and the token that authenticates its long polls; removed once claimed
 *   owners.json (0644)  { owners: [SHA-256 hex of SPKI] }: owner keys pinned at claim time (after their MAC
 *                       verified); end-to-end sessions from any other user key are refused unless the owner
 *                       granted it (grants.json, grant-book.ts)
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { parseClaimCode, PortwayError, type ClaimCode } from '../../../protocol';
import { newClaimCode, newPollToken } from '../../../shared/claim-tag';
import { writeFileAtomic } from '../../../shared/write-file-atomic';

export interface PendingClaimState {
  readonly code: ClaimCode;
  readonly pollToken: string;
  readonly isOwn: boolean;
}

const claimFileSchema = z.object({ code: z.string(), pollToken: z.string().regex(/^[A-Za-z0-9_-]{43}$/), isOwn: z.boolean() });
const ownersFileSchema = z.object({ owners: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(64) });

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PortwayError('PW_CONFIG_INVALID', `${file} is damaged; remove it to start claiming again`, { cause: err });
  }
}

/** The claim in progress: the configured code, or the device's own (kept across restarts, made when missing). */
export async function loadOrMakeClaim(stateDir: string, configured: string | undefined): Promise<PendingClaimState> {
  const file = path.join(stateDir, 'claim.json');
  const raw = await readJson(file);
  const saved = raw === undefined ? undefined : claimFileSchema.safeParse(raw);
  if (saved && !saved.success) throw new PortwayError('PW_CONFIG_INVALID', `${file} is damaged; remove it to start claiming again`);
  const previous = saved?.data;
  if (configured !== undefined) {
    const code = parseClaimCode(configured);
    if (previous && !previous.isOwn && parseClaimCode(previous.code).text === code.text) return { code, pollToken: previous.pollToken, isOwn: false };
    return saveClaim(stateDir, { code, pollToken: newPollToken(), isOwn: false });
  }
  if (previous?.isOwn) return { code: parseClaimCode(previous.code), pollToken: previous.pollToken, isOwn: true };
  return saveClaim(stateDir, { code: newClaimCode(), pollToken: newPollToken(), isOwn: true });
}

/** A fresh code of the device's own (the old one expired or was taken). */
export function makeNewOwnClaim(stateDir: string): Promise<PendingClaimState> {
  return saveClaim(stateDir, { code: newClaimCode(), pollToken: newPollToken(), isOwn: true });
}

async function saveClaim(stateDir: string, state: PendingClaimState): Promise<PendingClaimState> {
  await writeFileAtomic(path.join(stateDir, 'claim.json'), JSON.stringify({ code: state.code.text, pollToken: state.pollToken, isOwn: state.isOwn }), 0o600);
  return state;
}

export async function clearClaim(stateDir: string): Promise<void> {
  await fs.rm(path.join(stateDir, 'claim.json'), { force: true });
}

/** The pinned owner keys, or undefined for a device that was never claimed (enrolled with a fleet key). */
export async function loadOwnerPins(stateDir: string): Promise<ReadonlySet<string> | undefined> {
  const file = path.join(stateDir, 'owners.json');
  const raw = await readJson(file);
  if (raw === undefined) return undefined;
  const parsed = ownersFileSchema.safeParse(raw);
  if (!parsed.success) throw new PortwayError('PW_CONFIG_INVALID', `${file} is damaged (it holds the owner key pins)`);
  return new Set(parsed.data.owners);
}

export async function addOwnerPin(stateDir: string, fingerprint: string): Promise<void> {
  const owners = new Set(await loadOwnerPins(stateDir));
  owners.add(fingerprint);
  await writeFileAtomic(path.join(stateDir, 'owners.json'), JSON.stringify({ owners: [...owners] }), 0o644);
}
