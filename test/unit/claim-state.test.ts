/**
 * The agent's claim state (agent/src/claim/claim-state.ts): a device's own code and its poll token survive a
 * restart, a configured code keeps its poll token while unchanged, damaged files are named, owner pins grow.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { addOwnerPin, clearClaim, loadOrMakeClaim, loadOwnerPins, makeNewOwnClaim } from '../../agent/src/claim/claim-state';
import { newClaimCode } from '../../shared/claim-tag';
import { Disposer, makeTempDir } from '../helpers';

describe('agent claim state', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it("keeps the device's own code and poll token across restarts, 0600, until replaced or cleared", async () => {
    const dir = await makeTempDir(disposer);
    const first = await loadOrMakeClaim(dir, undefined);
    expect(first.isOwn).toBe(true);
    expect((await fs.stat(path.join(dir, 'claim.json'))).mode & 0o777).toBe(0o600);
    expect(await loadOrMakeClaim(dir, undefined)).toEqual(first);
    const replaced = await makeNewOwnClaim(dir);
    expect(replaced.code.text).not.toBe(first.code.text);
    expect(await loadOrMakeClaim(dir, undefined)).toEqual(replaced);
    await clearClaim(dir);
    expect((await loadOrMakeClaim(dir, undefined)).code.text).not.toBe(replaced.code.text);
  });

  it('uses a configured code, keeping its poll token while the code stays the same', async () => {
    const dir = await makeTempDir(disposer);
    const code = newClaimCode();
    const first = await loadOrMakeClaim(dir, code.text.toLowerCase());
    expect(first).toMatchObject({ code, isOwn: false });
    expect(await loadOrMakeClaim(dir, code.text)).toEqual(first);
    const other = newClaimCode();
    const second = await loadOrMakeClaim(dir, other.text);
    expect(second.code).toEqual(other);
    expect(second.pollToken).not.toBe(first.pollToken);
    await expect(loadOrMakeClaim(dir, 'NOT-A-CODE')).rejects.toMatchObject({ code: 'PW_CLAIM_CODE_INVALID' });
  });

  it('pins owner keys (a set), and names damaged files', async () => {
    const dir = await makeTempDir(disposer);
    expect(await loadOwnerPins(dir)).toBeUndefined();
    await addOwnerPin(dir, 'a'.repeat(64));
    await addOwnerPin(dir, 'a'.repeat(64));
    await addOwnerPin(dir, 'b'.repeat(64));
    expect([...((await loadOwnerPins(dir)) ?? [])]).toEqual(['a'.repeat(64), 'b'.repeat(64)]);
    await fs.writeFile(path.join(dir, 'owners.json'), '{"owners":["nope"]}');
    await expect(loadOwnerPins(dir)).rejects.toMatchObject({ code: 'PW_CONFIG_INVALID' });
    await fs.writeFile(path.join(dir, 'claim.json'), '{');
    await expect(loadOrMakeClaim(dir, undefined)).rejects.toMatchObject({ code: 'PW_CONFIG_INVALID' });
  });
});
