/**
 * sd_notify for the agent under systemd (Type=notify, WatchdogSec=): READY=1 once the agent runs, WATCHDOG=1 at
 * half the watchdog interval from the event loop, STOPPING=1 on shutdown.
 *
 * Node has no unix datagram sockets, so each message is one `systemd-notify STATE` child (the unit needs
 * NotifyAccess=all, since the sender is not the main PID). systemd-notify waits for the manager to process the
 * message (BARRIER=1), which also closes the race where a short-lived sender has exited before the manager
 * looked up its unit; that wait is bounded by SEND_TIMEOUT_MS. At most one child is in flight: a ping due while
 * the previous one still runs is skipped, so a wedged manager cannot make the agent pile up processes; READY=1
 * and STOPPING=1 wait their turn instead (at most MAX_QUEUED).
 * A ping costs one fork+exec every WatchdogSec/2 (30 s with the unit's 60 s): see docs/device.md for figures.
 *
 * The pings come from a timer on the agent's event loop: if the loop hangs (a busy loop, a blocking call that
 * never returns), the pings stop and systemd kills and restarts the agent after WatchdogSec.
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../../../shared/logger';

export interface SystemdNotifierOptions {
  /** $NOTIFY_SOCKET; without it nothing is sent (not run by systemd, or Type= is not notify). */
  readonly notifySocket: string | undefined;
  /** $WATCHDOG_USEC; absent or 0: no watchdog pings. */
  readonly watchdogUsec: number | undefined;
  /** The systemd-notify program (its path on PATH), or undefined when it is not installed. */
  readonly program: string | undefined;
}

const SEND_TIMEOUT_MS = 10_000;
/** Shortest ping period accepted (a misconfigured WatchdogSec must not turn into a fork storm). */
const MIN_PING_MS = 500;
const MAX_QUEUED = 4;

export class SystemdNotifier {
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;
  private readonly queued: string[] = [];
  private hasWarned = false;
  readonly counts = { sent: 0, failed: 0, skipped: 0 };

  constructor(
    private readonly deps: { log: Logger },
    private readonly options: SystemdNotifierOptions,
  ) {}

  get isEnabled(): boolean {
    return this.options.notifySocket !== undefined && this.options.notifySocket !== '';
  }

  /** Interval between WATCHDOG=1 pings, or undefined without a watchdog. */
  get pingIntervalMs(): number | undefined {
    const usec = this.options.watchdogUsec;
    if (!this.isEnabled || usec === undefined || !Number.isFinite(usec) || usec <= 0) return undefined;
    return Math.max(MIN_PING_MS, Math.floor(usec / 1000 / 2));
  }

  /** Start the watchdog pings (one at once, then every pingIntervalMs). */
  startWatchdog(): void {
    const interval = this.pingIntervalMs;
    if (interval === undefined || this.timer) return;
    this.send('WATCHDOG=1');
    this.timer = setInterval(() => this.send('WATCHDOG=1'), interval);
    this.timer.unref();
    this.deps.log.info({ intervalMs: interval }, 'agent.watchdog.started');
  }

  ready(): void {
    this.send('READY=1');
  }

  stopping(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.send('STOPPING=1');
  }

  private send(state: string): void {
    if (!this.isEnabled) return;
    const program = this.options.program;
    if (program === undefined) {
      if (!this.hasWarned) this.deps.log.error({ state }, 'agent.notify.no_systemd_notify');
      this.hasWarned = true;
      return;
    }
    if (this.inFlight && state !== 'WATCHDOG=1' && this.queued.length < MAX_QUEUED) {
      this.queued.push(state);
      return;
    }
    if (this.inFlight) {
      this.counts.skipped++;
      this.deps.log.warn({ state, skipped: this.counts.skipped }, 'agent.notify.skipped');
      return;
    }
    this.inFlight = true;
    const child = spawn(program, [state], { stdio: ['ignore', 'ignore', 'pipe'], env: { NOTIFY_SOCKET: this.options.notifySocket }, timeout: SEND_TIMEOUT_MS });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-500)));
    const done = (ok: boolean, reason?: string): void => {
      if (!this.inFlight) return;
      this.inFlight = false;
      if (ok) this.counts.sent++;
      else {
        this.counts.failed++;
        this.deps.log.warn({ state, reason, failed: this.counts.failed }, 'agent.notify.failed');
      }
      const next = this.queued.shift();
      if (next !== undefined) this.send(next);
    };
    child.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
    child.on('close', (code, signal) => done(code === 0, code === 0 ? undefined : `${signal ?? `exit ${String(code)}`}: ${stderr.trim()}`));
  }
}
