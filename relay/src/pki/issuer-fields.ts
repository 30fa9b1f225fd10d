/**
 * The two fields of a CA certificate that every certificate it issues must repeat: its subject name
 * (copied byte for byte as the issuer name, so name chaining never depends on string re-encoding) and its
 * subject key identifier (repeated as the authority key identifier).
 */
import { expectDer, readDerElements } from '../../../shared/x509';

export interface IssuerFields {
  readonly subjectDer: Buffer;
  /** From the subjectKeyIdentifier extension; undefined when the certificate has none. */
  readonly subjectKeyId: Buffer | undefined;
}

const TAG = { OID: 0x06, OCTET_STRING: 0x04, SEQUENCE: 0x30, BIT_STRING: 0x03, VERSION: 0xa0, EXTENSIONS: 0xa3 } as const;
const SKI_OID_DER = Buffer.from([0x55, 0x1d, 0x0e]);

/** RangeError when the DER is not a certificate. */
export function readIssuerFields(certDer: Buffer): IssuerFields {
  const [cert] = expectDer(certDer, [TAG.SEQUENCE]);
  const [tbs] = expectDer(cert.content, [TAG.SEQUENCE, TAG.SEQUENCE, TAG.BIT_STRING]);
  const fields = readDerElements(tbs.content);
  const first = fields[0]?.tag === TAG.VERSION ? 1 : 0;
  // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then optional [1] [2] [3]
  const subject = fields[first + 4];
  if (!subject || subject.tag !== TAG.SEQUENCE) throw new RangeError('certificate has no subject');
  const extensions = fields.slice(first + 6).find((field) => field.tag === TAG.EXTENSIONS);
  return { subjectDer: subject.der, subjectKeyId: extensions ? findSubjectKeyId(extensions.content) : undefined };
}

function findSubjectKeyId(extensionsContent: Buffer): Buffer | undefined {
  const [list] = expectDer(extensionsContent, [TAG.SEQUENCE]);
  for (const extension of readDerElements(list.content)) {
    const parts = readDerElements(extension.content);
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (id?.tag === TAG.OID && id.content.equals(SKI_OID_DER) && value?.tag === TAG.OCTET_STRING) {
      const [keyId] = expectDer(value.content, [TAG.OCTET_STRING]);
      return keyId.content;
    }
  }
  return undefined;
}
