/**
 * Serial port failures as coded errors (errno from fs, message text from serialport, which reports only a
 * string), and a close that never throws.
 */
import type { SerialPort } from 'serialport';
import { PortwayError } from '../../../protocol';

export function closeQuietly(port: SerialPort): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!port.isOpen) {
      resolve();
      return;
    }
    port.close(() => resolve());
  });
}

/** A coded error for a failure to open or use the port (errno from fs, message text from serialport). */
export function portError(path: string, err: Error & { code?: string }): PortwayError {
  const text = `${err.code ?? ''} ${err.message}`;
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || /No such file or directory|No such device/.test(text)) {
    return new PortwayError('PW_SERVICE_UNAVAILABLE', `serial device ${path} is not present (unplugged?)`, { cause: err });
  }
  if (err.code === 'EACCES' || err.code === 'EPERM' || /Permission denied|Operation not permitted/.test(text)) {
    return new PortwayError('PW_SERIAL_PERMISSION_DENIED', `the agent may not open ${path} (${err.code ?? 'permission denied'}); add its user to the dialout group`, { cause: err });
  }
  if (/Cannot lock port|Resource temporarily unavailable/.test(text)) {
    return new PortwayError('PW_SERIAL_BUSY', `serial device ${path} is locked by another program on the device`, { cause: err });
  }
  return new PortwayError('PW_SERVICE_UNREACHABLE', `serial device ${path}: ${err.message.slice(0, 200)}`, { cause: err });
}
