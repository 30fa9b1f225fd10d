/** What `portway share`, `unshare` and `shares` print about owner grants (device-grants.ts). */
import type { GrantEntry } from '../../protocol';
import type { GrantOutcome } from './device-grants';

const iso = (ms: number | undefined): string => (ms === undefined ? 'never' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

/** Lines for stdout (what was signed) and stderr (what the owner should know: where keys came from, what could not be signed). */
export function formatGrantOutcome(device: string, user: string, outcome: GrantOutcome, verb: 'granted' | 'revoked'): { stdout: string; stderr: string } {
  if (outcome.kind === 'not-claimed') return { stdout: '', stderr: '' };
  if (outcome.kind === 'not-owner') {
    return {
      stdout: '',
      stderr: `portway: note: ${device} was claimed with another key (${outcome.ownerKey}); this machine cannot sign its grants, so the device ${verb === 'granted' ? `refuses ${user} until its owner runs portway share from the machine that claimed it` : `keeps any grant of ${user} until its owner runs portway unshare from the machine that claimed it`}\n`,
    };
  }
  const state = outcome.delivered ? 'delivered to the device' : 'the relay delivers it when the device comes online';
  const lines = outcome.keys.map((key) => `${verb} key ${key} of ${user} on ${device} (grant set ${outcome.seq}; ${state})\n`);
  if (outcome.keys.length === 0) lines.push(`re-signed the grants of ${device} (grant set ${outcome.seq}; ${state})\n`);
  const note = verb === 'granted' && outcome.keysFrom === 'relay'
    ? `portway: note: ${user}'s key${outcome.keys.length > 1 ? 's were' : ' was'} named by the relay; compare with "portway key" on ${user}'s machine, or pin with --key-fingerprint\n`
    : '';
  return { stdout: lines.join(''), stderr: note };
}

export function formatGrants(grants: { seq: number; entries: readonly GrantEntry[]; signer: string }): string {
  const rows = [['KEY', 'USER', 'SERVICES', 'EXPIRES'], ...grants.entries.map((e) => [e.key, e.user, e.services?.join(',') ?? 'all', iso(e.expiresAt)])];
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const table = rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
  const signer = grants.signer === 'this machine' ? 'signed by this machine' : `signed by owner key ${grants.signer} (as the relay names it)`;
  return `\nsigned device grants (set ${grants.seq}, ${signer}):\n${table}\n`;
}
