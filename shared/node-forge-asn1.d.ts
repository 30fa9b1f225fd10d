/**
 * Types for `node-forge/lib/asn1`, node-forge's ASN.1 module on its own: it is `forge.asn1` (with forge.util and
 * forge.oids, which it requires), without the rest of node-forge. The agent needs only the encoder, and loading
 * the whole of node-forge costs a device about 10 MB of memory (docs/benchmark.md, agent idle RSS).
 */
declare module 'node-forge/lib/asn1' {
  import type forge from 'node-forge';
  const asn1: typeof forge.asn1;
  export = asn1;
}
