/** Root logger factory: pino, JSON lines to stdout (the journal); components use `log.child({ component })`. */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(options: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = options.level ?? 'info';
  const destination = options.destination ?? pino.destination({ fd: 1, sync: true });
  // A closed stdout (EPIPE) must not take the process down: the agent keeps running without logs.
  if ('on' in destination && typeof destination.on === 'function') {
    destination.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  return pino(
    {
      level,
      base: options.name ? { name: options.name } : undefined,
      redact: { paths: ['token', 'enrollKey', 'key', 'keyPem', 'privateKeyPem', '*.token', '*.enrollKey'], censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** A logger that drops everything, for library use and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
