/** Constants shared by every Portway component. Durations and sizes carry their unit. */

/** ALPN protocol ids on the relay's single TLS port. */
export const ALPN_MQTT = 'mqtt';
export const ALPN_DATA = 'portway-data/1';
export const ALPN_HTTP = 'http/1.1';
export const RELAY_ALPNS = [ALPN_DATA, ALPN_MQTT, ALPN_HTTP] as const;

/** Data-socket preamble: magic then version. */
export const DATA_MAGIC = Buffer.from('PWDS', 'ascii');
export const DATA_VERSION = 1;

/** Control frames on data sockets are small JSON documents. */
export const MAX_FRAME_BYTES = 8192;
/** Before a peer has authenticated (the first frame), a tighter cap. */
export const MAX_PREAUTH_FRAME_BYTES = 4096;
export const FRAME_HEADER_BYTES = 4;

/** Stream tokens: 32 random bytes, base64url. */
export const STREAM_TOKEN_BYTES = 32;

/** Certificate subject alternative name URIs carry the role and the ID. */
export const URI_DEVICE_PREFIX = 'urn:portway:device:';
export const URI_USER_PREFIX = 'urn:portway:user:';

/** Names that users and devices give to services and devices. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
