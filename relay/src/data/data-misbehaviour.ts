/**
 * TEST ONLY: a relay that misbehaves on the data plane, to prove the end-to-end session catches it
 * (test/integration/reliability-hostile-relay.test.ts). relay/src/main.ts builds it only from
 * PORTWAY_TEST_MISBEHAVE=NAME[:SERVICE] with PORTWAY_TEST=1 and logs a warning; without both, DataPlane never
 * sees one. Only streams for SERVICE (every stream when it is left out) are touched, so the test can show that
 * the relay keeps serving the others.
 *
 * - `replay-record`: after the handoff, the client-to-agent direction sends the REPLAY_NTH_RECORD-th inner TLS
 *   record of type application_data (23) twice, the way a relay that records and replays ciphertext would.
 * - `splice-other-device`: a client's stream for device A is paired with a data socket of another online device
 *   of the same owner (its RELAY_STATUS still names A, as a relay hiding the swap would).
 * - `forge-service`: the STREAM_OPEN sent to the agent names the service in PORTWAY_TEST_FORGED_SERVICE (any
 *   string, unchecked) instead of the one the client asked for and the relay authorized; the client's
 *   RELAY_STATUS is the usual one, as a relay redirecting streams would answer.
 */
import { Transform, type TransformCallback } from 'node:stream';

export const DATA_MISBEHAVIOURS = ['replay-record', 'splice-other-device', 'forge-service'] as const;
export type DataMisbehaviourName = (typeof DATA_MISBEHAVIOURS)[number];

/** Past the client's handshake records (Finished, and Certificate/CertificateVerify when they come apart). */
const REPLAY_NTH_RECORD = 6;
const TLS_HEADER_BYTES = 5;
const TLS_APPLICATION_DATA = 23;

export class DataMisbehaviour {
  constructor(
    readonly name: DataMisbehaviourName,
    private readonly service: string | undefined,
    /** forge-service: the name the agent is told instead. */
    private readonly forgedService?: string,
  ) {
    if (name === 'forge-service' && forgedService === undefined) throw new TypeError('forge-service needs the forged service name');
  }

  appliesTo(service: string): boolean {
    return this.service === undefined || this.service === service;
  }

  /** forge-service: the service name to put in STREAM_OPEN for a stream the client opened to `service`. */
  serviceForAgent(service: string): string {
    return this.name === 'forge-service' && this.appliesTo(service) ? (this.forgedService as string) : service;
  }

  /** replay-record: the tamperer for the client-to-agent bytes of one stream. */
  clientToAgent(): Transform | undefined {
    return this.name === 'replay-record' ? new RecordReplayer(REPLAY_NTH_RECORD) : undefined;
  }
}

/** Passes TLS records through, sending the n-th application_data record twice; after that, bytes as they come. */
class RecordReplayer extends Transform {
  private pending = Buffer.alloc(0);
  private seen = 0;
  private isDone = false;

  constructor(private readonly nth: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.isDone) return callback(null, chunk);
    this.pending = Buffer.concat([this.pending, chunk]);
    let offset = 0;
    while (!this.isDone && this.pending.length - offset >= TLS_HEADER_BYTES) {
      const length = this.pending.readUInt16BE(offset + 3);
      const end = offset + TLS_HEADER_BYTES + length;
      if (end > this.pending.length) break;
      const record = this.pending.subarray(offset, end);
      this.push(record);
      if (record[0] === TLS_APPLICATION_DATA && ++this.seen === this.nth) {
        this.push(Buffer.from(record));
        this.isDone = true;
      }
      offset = end;
    }
    const rest = this.pending.subarray(offset);
    this.pending = Buffer.alloc(0);
    if (this.isDone) callback(null, rest.length > 0 ? rest : undefined);
    else {
      this.pending = Buffer.from(rest);
      callback();
    }
  }
}
