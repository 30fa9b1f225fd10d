/** Public surface of the relay's PKI: the certificate authority. CSR parsing and fingerprints live in shared/x509. */
export {
  CA_VALIDITY_YEARS,
  CertificateAuthority,
  NOT_BEFORE_BACKDATE_MS,
  SERVER_CERT_VALIDITY_DAYS,
  type CertificateAuthorityDeps,
  type IssuedCertificate,
  type PeerCertificateRequest,
} from './certificate-authority';
