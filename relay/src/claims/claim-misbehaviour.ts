/**
 * TEST ONLY: a relay that lies during claims, to prove the claim MACs catch it (test/integration/claim-*.test.ts).
 * `swap-claim-keys` hands the claimer a key the relay made instead of the device's, hands the device a key
 * the relay made instead of the owner's, and when the device refuses, forges a "claimed" answer for the
 * claimer. relay/src/main.ts builds it only from PORTWAY_TEST_MISBEHAVE with PORTWAY_TEST=1 and logs a warning;
 * without both, ClaimService never sees one.
 */
import { randomBytes } from 'node:crypto';
import { spkiOfKeyPem } from '../../../shared/claim-tag';
import { generateKeyPair } from '../../../shared/x509';
import { newId, type Claim } from '../store';

export const MISBEHAVIOURS = ['swap-claim-keys'] as const;
export type MisbehaviourName = (typeof MISBEHAVIOURS)[number];

export class ClaimMisbehaviour {
  private readonly fakeKey = spkiOfKeyPem(generateKeyPair().privateKeyPem).toString('base64');

  constructor(readonly name: MisbehaviourName) {}

  deviceKeyForClaimer(_real: string): string {
    return this.fakeKey;
  }

  ownerKeyForDevice(_real: string): string {
    return this.fakeKey;
  }

  /** What a lying relay tells the claimer after the device refused: "claimed", with a made-up MAC. */
  forgedResult(claim: Claim): { deviceId: string; name: string; deviceKey: string; deviceTag: string } {
    return { deviceId: newId('dev'), name: claim.name, deviceKey: this.fakeKey, deviceTag: randomBytes(32).toString('base64') };
  }
}
