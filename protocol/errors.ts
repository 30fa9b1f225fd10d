/**
 * The one registry of Portway error codes.
 *
 * A code is never renamed or reused. `wire` says whether the code may cross the network (in a data-socket
 * status frame, an end-to-end status frame or an MQTT reply); local-only codes stay inside one process.
 * `retryable` tells callers (reconnect loops, the CLI) whether trying again later can succeed.
 * Every code appears in docs/protocol.md (a unit test checks it).
 */
export interface ErrorSpec {
  readonly meaning: string;
  readonly retryable: boolean;
  readonly wire: boolean;
}

export const ERRORS = {
  PW_BAD_PREAMBLE: { meaning: 'data socket did not start with the Portway magic and a known version', retryable: false, wire: true },
  PW_BAD_FRAME: { meaning: 'a frame had an unknown type, unknown flags or a malformed payload', retryable: false, wire: true },
  PW_FRAME_TOO_LARGE: { meaning: 'a frame length exceeded the limit for its phase', retryable: false, wire: true },
  PW_HANDSHAKE_TIMEOUT: { meaning: 'the peer did not finish its handshake or hello in time', retryable: true, wire: true },
  PW_NOT_TLS: { meaning: 'the first bytes on the relay port were not a TLS handshake', retryable: false, wire: false },
  PW_TLS_RECORD_INVALID: { meaning: 'after the handshake, a TLS record on the relay port failed to decrypt or broke the TLS protocol; the connection is closed', retryable: false, wire: false },
  PW_UNKNOWN_ALPN: { meaning: 'TLS connection without a supported ALPN protocol', retryable: false, wire: false },
  PW_CLIENT_CERT_REQUIRED: { meaning: 'a valid client certificate issued by this relay is required', retryable: false, wire: true },
  PW_WRONG_ROLE: { meaning: 'the certificate belongs to another role (a device acting as a user, or a user as a device)', retryable: false, wire: true },
  PW_UNAUTHENTICATED: { meaning: 'missing, unknown, expired or revoked credentials', retryable: false, wire: true },
  PW_NOT_AUTHORIZED: { meaning: 'the user is not allowed to reach this device or service, or to change this resource', retryable: false, wire: true },
  PW_UNKNOWN_DEVICE: { meaning: 'no device with this name or ID', retryable: false, wire: true },
  PW_DEVICE_OFFLINE: { meaning: 'the device is not connected to the relay', retryable: true, wire: true },
  PW_SERVICE_NOT_EXPOSED: { meaning: 'the device does not expose a service with this name', retryable: false, wire: true },
  PW_SERVICE_REFUSED: { meaning: 'connection refused by device service', retryable: true, wire: true },
  PW_SERVICE_UNREACHABLE: { meaning: 'the device could not reach its service (timeout or network error)', retryable: true, wire: true },
  PW_SERVICE_TYPE_MISMATCH: { meaning: 'the stream and the service disagree on the transport (a TCP stream to a UDP service or the reverse)', retryable: false, wire: true },
  PW_DIAL_TIMEOUT: { meaning: 'the device did not open a data socket for the stream in time', retryable: true, wire: true },
  PW_STREAM_TOKEN_INVALID: { meaning: 'unknown, expired or already used stream token', retryable: false, wire: true },
  PW_LIMIT_REACHED: { meaning: 'a bounded resource (streams, pending opens, pooled sockets) is full', retryable: true, wire: true },
  PW_ENROLL_KEY_INVALID: { meaning: 'unknown, expired or used-up enrollment key', retryable: false, wire: true },
  PW_BAD_CSR: { meaning: 'certificate signing request is malformed or its signature does not verify', retryable: false, wire: true },
  PW_BAD_REQUEST: { meaning: 'a request was malformed or failed validation', retryable: false, wire: true },
  PW_NOT_FOUND: { meaning: 'no such API resource', retryable: false, wire: true },
  PW_E2E_HANDSHAKE_FAILED: { meaning: 'the end-to-end TLS session between client and device failed', retryable: true, wire: false },
  PW_E2E_DEVICE_KEY_MISMATCH: { meaning: 'the device presented a key other than the one pinned for it', retryable: false, wire: false },
  PW_E2E_PEER_MISMATCH: { meaning: 'the end-to-end peer certificate does not match the identity the relay announced', retryable: false, wire: true },
  PW_E2E_SERVICE_MISMATCH: { meaning: 'the service the relay opened is not the one the client asked for in its end-to-end handshake (a relay rewrote the name)', retryable: false, wire: true },
  PW_STREAM_ABORTED: { meaning: 'the stream was cut before a clean end (peer or relay failed)', retryable: true, wire: false },
  PW_E2E_INTEGRITY: { meaning: 'the end-to-end session failed its integrity check: a record was altered, replayed, reordered or forged between client and device', retryable: false, wire: false },
  PW_RELAY_UNREACHABLE: { meaning: 'could not connect to the relay', retryable: true, wire: false },
  PW_BROKER_UNREACHABLE: { meaning: 'the relay could not connect to its external MQTT broker', retryable: true, wire: false },
  PW_RELAY_CERT_MISMATCH: { meaning: 'the relay certificate does not match the configured CA or fingerprint', retryable: false, wire: false },
  PW_RELAY_BUSY: { meaning: 'the relay is pacing new device sessions (a reconnection storm) and closed this one before TLS; the device retries after its backoff', retryable: true, wire: false },
  PW_SHUTTING_DOWN: { meaning: 'the component is stopping', retryable: true, wire: true },
  PW_UNKNOWN_MESSAGE: { meaning: 'a control message had an unknown type', retryable: false, wire: true },
  PW_CONFIG_INVALID: { meaning: 'a configuration file failed validation', retryable: false, wire: false },
  PW_NOT_LOGGED_IN: { meaning: 'no client settings; run portway login first', retryable: false, wire: false },
  PW_NAME_TAKEN: { meaning: 'a user with this name already exists', retryable: false, wire: true },
  PW_STORE_UNSUPPORTED: { meaning: 'the database schema is newer than this relay supports (downgrade)', retryable: false, wire: false },
  PW_STORE_UNAVAILABLE: { meaning: "the relay's database cannot be reached (PostgreSQL down or refusing)", retryable: true, wire: false },
  PW_TOKEN_EXPIRED: { meaning: 'the API token (or the token a user certificate was issued with) has expired', retryable: false, wire: true },
  PW_TOKEN_REVOKED: { meaning: 'the API token (or the token a user certificate was issued with) was revoked', retryable: false, wire: true },
  PW_SCOPE_INSUFFICIENT: { meaning: 'the API token\'s scope does not allow this (a read-only token opening streams or changing things)', retryable: false, wire: true },
  PW_SERVICE_UNAVAILABLE: { meaning: 'the service is configured but cannot be used now (its serial device path is missing: unplugged)', retryable: true, wire: true },
  PW_SERIAL_BUSY: { meaning: 'the serial port is in use (another stream holds it, or another program on the device locked it)', retryable: true, wire: true },
  PW_SERIAL_PERMISSION_DENIED: { meaning: 'the agent may not open the serial device (its user is not in the dialout group, or the path is not a device it may use)', retryable: false, wire: true },
  PW_TELNET_INVALID: { meaning: 'an RFC 2217 client sent malformed Telnet or COM-PORT-OPTION bytes; the bad command was ignored', retryable: false, wire: false },
  PW_CLAIM_CODE_INVALID: { meaning: 'not a claim code: wrong length, a character outside the alphabet, or a failed check character (a typo)', retryable: false, wire: true },
  PW_CLAIM_NOT_FOUND: { meaning: 'no device is waiting to be claimed with this code (not registered yet, or never)', retryable: true, wire: true },
  PW_CLAIM_EXPIRED: { meaning: 'the claim code has expired', retryable: false, wire: true },
  PW_CLAIM_USED: { meaning: 'the claim code was already used: the device has an owner', retryable: false, wire: true },
  PW_CLAIM_IN_PROGRESS: { meaning: 'another claim of this device is being answered; try again', retryable: true, wire: true },
  PW_CLAIM_ID_TAKEN: { meaning: 'another device already registered this claim code', retryable: false, wire: true },
  PW_CLAIM_BINDING_FAILED: { meaning: 'the claim MAC did not verify: wrong code, or a key was substituted on the way (a relay cannot forge it)', retryable: false, wire: true },
  PW_RATE_LIMITED: { meaning: 'too many failed claim attempts from this address or user; wait and try again', retryable: true, wire: true },
  PW_E2E_OWNER_KEY_MISMATCH: { meaning: "the user's key is neither an owner key the device pinned when it was claimed nor a key its owner granted", retryable: false, wire: true },
  PW_E2E_NOT_GRANTED: { meaning: "the device's owner has not granted this user key access to this service (no grant, another service, or the grant expired)", retryable: false, wire: true },
  PW_GRANT_INVALID: { meaning: 'a grant set is malformed, for another device, or not signed by a pinned owner key', retryable: false, wire: true },
  PW_GRANT_STALE: { meaning: 'a grant set is not newer (sequence number not above) than the one already held: a replay or rollback', retryable: false, wire: true },
  PW_DEVICE_REVOKED: { meaning: 'the device was removed (revoked): its certificates and its key are refused for good', retryable: false, wire: true },
  PW_CERT_EXPIRED: { meaning: 'the client certificate has expired', retryable: false, wire: true },
  PW_CERT_NOT_YET_VALID: { meaning: 'the client certificate is not valid yet (its notBefore is in the future)', retryable: false, wire: true },
  PW_CERT_UNTRUSTED: { meaning: 'the client certificate was not issued by this relay\'s CA (or its signature does not verify)', retryable: false, wire: true },
  PW_INTERNAL: { meaning: 'unexpected internal error', retryable: true, wire: true },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, value);
}

export class PortwayError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].meaning, options);
    this.name = 'PortwayError';
    this.code = code;
    this.retryable = ERRORS[code].retryable;
  }

  /** The form that crosses the wire: `{ ok: false, code, message }`. */
  toWire(): { ok: false; code: ErrorCode; message: string } {
    return { ok: false, code: this.code, message: this.message };
  }
}

/** Rebuild an error received from a peer; unknown codes become PW_INTERNAL so callers always branch on a known code. */
export function errorFromWire(code: unknown, message: unknown): PortwayError {
  const text = typeof message === 'string' ? message.slice(0, 512) : undefined;
  return isErrorCode(code) ? new PortwayError(code, text) : new PortwayError('PW_INTERNAL', `peer sent unknown error code ${String(code).slice(0, 64)}`);
}
