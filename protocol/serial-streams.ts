/**
 * Serial streams: a `serial` service on the device is reached with an ordinary end-to-end stream (inner TLS,
 * E2E_STATUS, CHUNK/FIN framing, as for TCP). What the chunks carry depends on the service's mode:
 *
 *   mode "raw"      the port's bytes, unchanged, both ways
 *   mode "rfc2217"  a Telnet stream with the COM-PORT-OPTION (telnet-codec.ts, rfc2217.ts), so the client
 *                   can change the line settings and modem lines (pyserial's rfc2217:// client)
 *
 * The inner TLS ALPN says who is asking (integrity-protected, the relay cannot change it):
 *
 *   none                     the one writer: the port is opened for this stream; a second writer is refused
 *                            with PW_SERIAL_BUSY
 *   E2E_ALPN_SERIAL_TAP      a read-only tap: receives the port's bytes (raw, whatever the mode), what it
 *                            sends is discarded; allowed up to the service's `maxTaps` (default 0:
 *                            PW_LIMIT_REACHED)
 *
 * The port is opened when the first stream (writer or tap) opens and closed after the last one ends. While
 * its device path is missing (unplugged) the agent lists the service with `available: false` (MQTT services
 * topic) and refuses streams with PW_SERVICE_UNAVAILABLE. When the client ends its side (FIN) the agent
 * waits until its writes reached the port, forwards what the port sends for `lingerMs`, then ends its side.
 *
 * Version history: 1 (this layout).
 */
/** Inner-TLS ALPN id of a read-only serial tap. */
export const E2E_ALPN_SERIAL_TAP = 'portway-serial-tap/1';
