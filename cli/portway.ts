#!/usr/bin/env node
/**
 * The one `portway` command. Results go to stdout; failures are one line on stderr with their code.
 * Exit status: 0 success, 1 operational failure, 2 usage error, 78 configuration error (systemd does not
 * restart-loop on it: RestartPreventExitStatus=78).
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { PortwayError } from '../protocol';
import { tuneGcForStreaming } from '../shared/gc-tuning';

const VERSION = process.env.PORTWAY_VERSION ?? '0.1.0';
/** `portway pipe` after SIGHUP: how long the stream may take to finish closing before the process exits. */
const PIPE_HANGUP_GRACE_MS = 10_000;
/** `portway connect --udp` on SIGTERM: how long sessions may take to close before they are cut. */
const CONNECT_CLOSE_GRACE_MS = 5_000;
/** Input read from stdin for a token or a claim code. */
const MAX_STDIN_BYTES = 64 * 1024;
/** A claim code is 24 symbols; a line with dashes and spaces fits easily. */
const MAX_CLAIM_INPUT_BYTES = 1024;
/** `portway connect --udp`: at most one error line per code this often (the rest are counted). */
const UDP_REPORT_INTERVAL_MS = 5_000;

function fail(err: unknown): never {
  if (err instanceof PortwayError) {
    process.stderr.write(`portway: ${err.code}: ${err.message}\n`);
    process.exit(err.code === 'PW_CONFIG_INVALID' ? 78 : 1);
  }
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  process.stderr.write(`portway: PW_INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
}

/** Lazy-load a component so `portway agent` never loads relay code (and its native dependencies). */
function load<T>(path: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path) as T;
}

function intArg(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number');
  return Number(value);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const program = new Command('portway')
  .description('Reach TCP services on field devices through a self-hosted relay, end-to-end encrypted.')
  .version(VERSION)
  .exitOverride()
  .showHelpAfterError();

const relay = program.command('relay').description('run and manage a relay server');
relay
  .command('serve', { isDefault: true })
  .description('serve the relay port (TLS; MQTT, data sockets and HTTP API routed by ALPN)')
  .requiredOption('--data <dir>', 'relay data directory (from "portway relay init")')
  .option('--db <url>', 'the store: a postgres://user@host:port/dbname URL (password from PGPASSWORD or ~/.pgpass) or an SQLite file (default: relay.db in --data)')
  .option('--broker <url>', 'an external MQTT broker shared by several relays: mqtt://[user@]host:port or mqtts://... (password from PORTWAY_BROKER_PASSWORD; default: the embedded broker)')
  .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8443')
  .option('--cert <file>', "operator's own TLS certificate (PEM chain) instead of the relay-issued one")
  .option('--key <file>', 'key for --cert')
  .option('--config <file>', 'JSON file with timers and limits (see docs)')
  .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
  .option('--metrics <host:port>', 'serve Prometheus metrics on this loopback address')
  .action(async (o: { data: string; db?: string; broker?: string; listen: string; cert?: string; key?: string; config?: string; logLevel?: string; metrics?: string }) => {
    const { relayServe } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    await relayServe(o);
  });
relay
  .command('init')
  .description("create the relay's CA, server certificate and store")
  .requiredOption('--data <dir>', 'relay data directory to create')
  .option('--db <url>', 'the store: a postgres://user@host:port/dbname URL (password from PGPASSWORD or ~/.pgpass) or an SQLite file (default: relay.db in --data)')
  .option('--name <host>', 'a DNS name or IP address of the relay (repeatable)', collect, [])
  .action(async (o: { data: string; db?: string; name: string[] }) => {
    const { relayInit } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    const fingerprint = await relayInit(o, o.name);
    process.stdout.write(`relay initialised in ${o.data}\nCA fingerprint (SHA-256): ${fingerprint}\n`);
  });
relay
  .command('ca')
  .description('print the relay CA certificate (PEM)')
  .requiredOption('--data <dir>', 'relay data directory')
  .option('--fingerprint', 'print its SHA-256 fingerprint instead')
  .action(async (o: { data: string; fingerprint?: boolean }) => {
    const { relayCa } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    const ca = await relayCa(o.data);
    process.stdout.write(o.fingerprint ? `${ca.fingerprint}\n` : ca.pem);
  });
relay
  .command('user')
  .description('manage users')
  .command('add <name>')
  .description('add a user and print an API token for it (scope connect, no expiry)')
  .requiredOption('--data <dir>', 'relay data directory')
  .option('--db <url>', 'the store: a postgres://user@host:port/dbname URL (password from PGPASSWORD or ~/.pgpass) or an SQLite file (default: relay.db in --data)')
  .option('--admin', 'the user may reach every device')
  .action(async (name: string, o: { data: string; db?: string; admin?: boolean }) => {
    const { relayUserAdd } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    process.stdout.write(`${await relayUserAdd(o, name, o.admin === true)}\n`);
  });
relay
  .command('device')
  .description('devices in the store')
  .command('revoke <device>')
  .description('revoke a device (name or ID); a running relay ends its sessions within a second or two')
  .requiredOption('--data <dir>', 'relay data directory')
  .option('--db <url>', 'the store: a postgres://user@host:port/dbname URL (password from PGPASSWORD or ~/.pgpass) or an SQLite file (default: relay.db in --data)')
  .action(async (name: string, o: { data: string; db?: string }) => {
    const { relayDeviceRevoke } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    process.stdout.write(`revoked ${await relayDeviceRevoke({ data: o.data, db: o.db }, name)}\n`);
  });
relay
  .command('enroll-key')
  .description('manage fleet enrollment keys')
  .command('create')
  .description('print a new enrollment key for devices')
  .requiredOption('--data <dir>', 'relay data directory')
  .option('--db <url>', 'the store: a postgres://user@host:port/dbname URL (password from PGPASSWORD or ~/.pgpass) or an SQLite file (default: relay.db in --data)')
  .option('--uses <n>', 'how many devices may enroll with it', intArg, 1)
  .option('--expires <duration>', 'lifetime, e.g. 30m, 12h, 7d', '7d')
  .option('--owner <user>', 'user who will own the enrolled devices (default: admins only)')
  .action(async (o: { data: string; db?: string; uses: number; expires: string; owner?: string }) => {
    const { relayEnrollKeyCreate, parseDuration } = load<typeof import('../relay/src/main.js')>('../relay/src/main');
    process.stdout.write(`${await relayEnrollKeyCreate(o, { uses: o.uses, expiresMs: parseDuration(o.expires), owner: o.owner })}\n`);
  });

program
  .command('agent')
  .description('run the device agent (systemd runs this on the device)')
  .requiredOption('--config <file>', 'agent JSON config')
  .option('--metrics <host:port>', 'serve Prometheus metrics on this loopback address')
  .action(async (o: { config: string; metrics?: string }) => {
    const { runAgent } = load<typeof import('../agent/src/main.js')>('../agent/src/main');
    await runAgent(o.config, { metrics: o.metrics });
  });

program
  .command('login')
  .description('store relay settings, an API token and a user certificate for this machine')
  .requiredOption('--relay <host:port>', 'relay address')
  .requiredOption('--token <token>', 'API token from "portway relay user add" (or - to read it from stdin)')
  .option('--ca <file>', 'relay CA certificate (PEM)')
  .option('--fingerprint <sha256>', 'SHA-256 fingerprint of the relay CA')
  .action(async (o: { relay: string; token: string; ca?: string; fingerprint?: string }) => {
    const { login } = load<typeof import('../client/src/commands.js')>('../client/src/commands');
    let token = o.token;
    if (token === '-') token = (await readStdin()).trim();
    const result = await login({ relay: o.relay, token, caFile: o.ca, fingerprint: o.fingerprint });
    process.stdout.write(`logged in as ${result.userName}; settings in ${result.dir}\n`);
  });

program
  .command('claim')
  .description('take ownership of a device with its claim code (from its label, console or boot partition)')
  .argument('[code]', 'the claim code, e.g. A94Q-PXGV-QRD2-MB8P-GTYS-J6C5; - or nothing reads it from stdin, which keeps it out of the process list and shell history', '-')
  .option('--name <name>', 'name for the device (default: the name it registered with)')
  .action(async (code: string, o: { name?: string }) => {
    const { claimDevice } = load<typeof import('../client/src/claim.js')>('../client/src/claim');
    const claimed = await claimDevice(code === '-' ? (await readStdinLine(MAX_CLAIM_INPUT_BYTES)).trim() : code, { name: o.name });
    process.stdout.write(`claimed ${claimed.name} (${claimed.deviceId}); device key ${claimed.keyFingerprint} pinned\n`);
  });

program
  .command('claim-code')
  .description('claim codes for devices')
  .command('new')
  .description('print a new claim code (for a label, and the agent config "claimCode" or portway.toml)')
  .action(() => {
    const { newClaimCodeText } = load<typeof import('../client/src/claim.js')>('../client/src/claim');
    process.stdout.write(`${newClaimCodeText()}\n`);
  });

program
  .command('devices')
  .description('list your devices: name, ID, online or last seen, uptime, CPU temperature, memory, services')
  .option('--json', 'machine-readable output (with the latest telemetry)')
  .action(async (o: { json?: boolean }) => {
    const { listDevices } = load<typeof import('../client/src/commands.js')>('../client/src/commands');
    const { formatDeviceTable } = load<typeof import('../client/src/device-report.js')>('../client/src/device-report');
    const devices = await listDevices();
    process.stdout.write(o.json ? `${JSON.stringify(devices, null, 2)}\n` : formatDeviceTable(devices, Date.now()));
  });

const device = program.command('device').description('one device');
device
  .command('remove <device>')
  .description('remove (revoke) a device you own: its sessions and streams end at once, it can never connect or enroll with its key again')
  .action(async (name: string) => {
    const { removeDevice } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    process.stdout.write(`removed ${await removeDevice(name)}\n`);
  });
device
  .command('show <device>')
  .description("a device's state and its whole latest telemetry")
  .option('--json', 'machine-readable output')
  .action(async (device: string, o: { json?: boolean }) => {
    const { showDevice } = load<typeof import('../client/src/commands.js')>('../client/src/commands');
    const { formatDeviceDetail } = load<typeof import('../client/src/device-report.js')>('../client/src/device-report');
    const view = await showDevice(device);
    process.stdout.write(o.json ? `${JSON.stringify(view, null, 2)}\n` : formatDeviceDetail(view, Date.now()));
  });

program
  .command('connect <device> <service>')
  .description('forward a local port to a device service; one end-to-end stream per connection (per client address with --udp)')
  .option('-L, --listen <[addr:]port>', 'local address (default 127.0.0.1 and a free port)')
  .option('--udp', 'the service is UDP: listen on a UDP socket, one session per client address')
  .option('--idle-timeout <ms>', 'with --udp: close a session after this long without a datagram', intArg, 60_000)
  .option('--max-sessions <n>', 'with --udp: sessions open at once (the longest idle is evicted beyond it)', intArg, 1024)
  .action(async (device: string, service: string, o: { listen?: string; udp?: boolean; idleTimeout: number; maxSessions: number }) => {
    const { connect, parseListen } = load<typeof import('../client/src/commands.js')>('../client/src/commands');
    const report = { error: (err: PortwayError, remote: string) => process.stderr.write(`portway: ${err.code}: ${err.message} (connection from ${remote})\n`) };
    if (o.udp) {
      if (o.idleTimeout < 1 || o.maxSessions < 1) throw new PortwayError('PW_BAD_REQUEST', '--idle-timeout and --max-sessions must be at least 1');
      const { connectUdp } = load<typeof import('../client/src/udp-forward.js')>('../client/src/udp-forward');
      const { ReportLimiter } = load<typeof import('../client/src/report-limiter.js')>('../client/src/report-limiter');
      // Each new client address opens a session: an offline device must not print a line per address.
      const limiter = new ReportLimiter({ intervalMs: UDP_REPORT_INTERVAL_MS });
      const udpReport = {
        error: (err: PortwayError, remote: string) => {
          const { isPrinted, suppressed } = limiter.take(err.code);
          if (isPrinted) process.stderr.write(`portway: ${err.code}: ${err.message} (client ${remote}${suppressed ? `; ${suppressed} more like it in the last ${UDP_REPORT_INTERVAL_MS / 1000} s not shown` : ''})\n`);
        },
      };
      const proxy = await connectUdp({ device, service, listen: parseListen(o.listen), idleTimeoutMs: o.idleTimeout, maxSessions: o.maxSessions, closeGraceMs: CONNECT_CLOSE_GRACE_MS }, udpReport);
      process.stdout.write(`listening on udp ${proxy.address.host}:${proxy.address.port} -> ${device}/${service}\n`);
      // On stop, the session figures go to stdout as one JSON line (sessions opened, evicted, drops by reason).
      onStop(async () => {
        await proxy.close();
        process.stdout.write(`udp stats ${JSON.stringify(proxy.stats())}\n`);
      });
      return;
    }
    const proxy = await connect({ device, service, listen: parseListen(o.listen) }, report);
    process.stdout.write(`listening on ${proxy.address.host}:${proxy.address.port} -> ${device}/${service}\n`);
    onStop(() => proxy.close());
  });

/** SIGTERM or SIGINT runs `stop` once, then exits 0 (1 if it failed). */
function onStop(stop: () => Promise<void>): void {
  let isStopping = false;
  const handler = (): void => {
    if (isStopping) return;
    isStopping = true;
    stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

program
  .command('pipe <device> <service>')
  .description("one stream on stdin/stdout, e.g. ssh -o ProxyCommand='portway pipe %h ssh' user@device")
  .action(async (device: string, service: string) => {
    const { pipe } = load<typeof import('../client/src/commands.js')>('../client/src/commands');
    // ssh closes its pipes to the ProxyCommand and then sends it SIGHUP. Dying on that signal would cut every
    // stream mid-close (the agent resets the service, relay and agent log it as aborted). stdin's EOF is
    // already on its way, so the first hangup lets the stream finish its orderly close, within a bound; a
    // second hangup kills as usual.
    process.once('SIGHUP', () => {
      setTimeout(() => fail(new PortwayError('PW_STREAM_ABORTED', 'hung up, and the stream did not finish closing in time')), PIPE_HANGUP_GRACE_MS).unref();
    });
    const clean = await pipe({ device, service }, { stdin: process.stdin, stdout: process.stdout });
    if (!clean) throw new PortwayError('PW_STREAM_ABORTED', 'the stream was cut before a clean end');
    process.exit(0);
  });

const token = program.command('token').description('your API tokens: scope read (list, show) or connect (also open streams, change things)');
token
  .command('list')
  .description('your tokens: ID, scope, created, expires, revoked')
  .option('--user <name>', "another user's tokens (admins)")
  .option('--json', 'machine-readable output')
  .action(async (o: { user?: string; json?: boolean }) => {
    const { listTokens, formatTokens } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    const tokens = await listTokens(o.user);
    process.stdout.write(o.json ? `${JSON.stringify(tokens, null, 2)}\n` : formatTokens(tokens));
  });
token
  .command('create')
  .description('print a new token (shown once)')
  .option('--scope <scope>', 'read or connect', 'connect')
  .option('--expires <duration>', 'lifetime, e.g. 30m, 12h, 7d (default: none, or the expiry of the token you use)')
  .action(async (o: { scope: string; expires?: string }) => {
    const { createToken } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    const created = await createToken({ scope: o.scope, expires: o.expires });
    process.stdout.write(`${created.token}\n`);
    process.stderr.write(`token ${created.tokenId}, scope ${created.scope}${created.expiresAt === undefined ? '' : `, expires ${new Date(created.expiresAt).toISOString()}`}\n`);
  });
token
  .command('revoke <id>')
  .description('revoke a token (tok_…) and the certificates issued with it')
  .action(async (id: string) => {
    const { revokeToken } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    await revokeToken(id);
    process.stdout.write(`revoked ${id}\n`);
  });

program
  .command('share <device> <user>')
  .description("let another user reach a device you own: every service, or only those given. On a device this machine claimed, also signs a grant the device checks itself (USER may be you: your other machines' keys)")
  .option('--service <name>', 'a service to share (repeatable; default: all)', collect, [])
  .option('--key-fingerprint <sha256>', "grant exactly this user key (from \"portway key\" on their machine; repeatable) instead of the keys the relay names", collect, [])
  .option('--expires <duration>', 'the device stops honouring the grant after this long, e.g. 12h, 30d (default: never)')
  .action(async (device: string, user: string, o: { service: string[]; keyFingerprint: string[]; expires?: string }) => {
    const { shareDevice } = load<typeof import('../client/src/share-commands.js')>('../client/src/share-commands');
    const { formatGrantOutcome } = load<typeof import('../client/src/share-report.js')>('../client/src/share-report');
    const result = await shareDevice({ device, user, services: o.service, keyFingerprints: o.keyFingerprint, expires: o.expires });
    if (result.share) process.stdout.write(`shared ${result.share.deviceName} with ${result.share.userName}: ${result.share.services?.join(',') ?? 'all services'}\n`);
    const report = formatGrantOutcome(device, user, result.grant, 'granted');
    process.stdout.write(report.stdout);
    process.stderr.write(report.stderr);
  });
program
  .command('unshare <device> <user>')
  .description("stop sharing a device with a user; on a device this machine claimed, also re-signs its grants without them")
  .option('--key-fingerprint <sha256>', 'remove only the grant of this key (repeatable); the relay share stays', collect, [])
  .action(async (device: string, user: string, o: { keyFingerprint: string[] }) => {
    const { unshareDevice } = load<typeof import('../client/src/share-commands.js')>('../client/src/share-commands');
    const { formatGrantOutcome } = load<typeof import('../client/src/share-report.js')>('../client/src/share-report');
    const result = await unshareDevice({ device, user, keyFingerprints: o.keyFingerprint });
    if (result.removedShare) process.stdout.write(`${device} is no longer shared with ${user}\n`);
    const report = formatGrantOutcome(device, user, result.grant, 'revoked');
    process.stdout.write(report.stdout);
    process.stderr.write(report.stderr);
  });
program
  .command('key')
  .description("print this machine's user key fingerprint (SPKI SHA-256): give it to a device owner for portway share --key-fingerprint")
  .action(async () => {
    const { ownKeyFingerprint } = load<typeof import('../client/src/device-grants.js')>('../client/src/device-grants');
    process.stdout.write(`${await ownKeyFingerprint()}\n`);
  });
program
  .command('shares [device]')
  .description("who a device you own is shared with (and, for a claimed device, the keys its owner's signed grant set names); without a device, what is shared with you")
  .option('--json', 'machine-readable output (the relay shares; the signed grants are printed as text only)')
  .action(async (device: string | undefined, o: { json?: boolean }) => {
    const { listShares, formatShares } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    const shares = await listShares(device);
    if (device === undefined || o.json) {
      process.stdout.write(o.json ? `${JSON.stringify(shares, null, 2)}\n` : formatShares(shares));
      return;
    }
    const { currentGrants } = load<typeof import('../client/src/device-grants.js')>('../client/src/device-grants');
    const { formatGrants } = load<typeof import('../client/src/share-report.js')>('../client/src/share-report');
    const grants = await currentGrants(device);
    process.stdout.write(formatShares(shares) + (grants ? formatGrants(grants) : ''));
  });

program
  .command('console <device> <service>')
  .description('attach this terminal to a serial service (raw mode; Ctrl-] q leaves), like screen or picocom')
  .option('--read-only', 'a read-only tap beside the port\'s user (the service must allow taps: maxTaps)')
  .option('--escape <char>', 'escape key: Ctrl-<char> (default ])', ']')
  .action(async (device: string, service: string, o: { readOnly?: boolean; escape: string }) => {
    const { runConsole } = load<typeof import('../client/src/console.js')>('../client/src/console');
    const { parseEscape } = load<typeof import('../client/src/console-escape.js')>('../client/src/console-escape');
    let escape: number;
    try {
      escape = parseEscape(o.escape);
    } catch (err) {
      throw new PortwayError('PW_BAD_REQUEST', (err as Error).message);
    }
    const outcome = await runConsole({ device, service, readOnly: o.readOnly === true, escape }, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    if (outcome === 'aborted') throw new PortwayError('PW_STREAM_ABORTED', 'the serial stream was cut');
    process.exit(0);
  });

program
  .command('audit')
  .description('the relay audit log, newest first (admins): logins, tokens, shares, enrollments')
  .option('--limit <n>', 'entries to show (1-1000)', intArg, 50)
  .option('--json', 'machine-readable output')
  .action(async (o: { limit: number; json?: boolean }) => {
    const { listAudit, formatAudit } = load<typeof import('../client/src/account-commands.js')>('../client/src/account-commands');
    const entries = await listAudit(o.limit);
    process.stdout.write(o.json ? `${JSON.stringify(entries, null, 2)}\n` : formatAudit(entries));
  });

/** The first line of stdin (typed, or piped), without waiting for its end; at most `maxBytes`. */
function readStdinLine(maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString('utf8');
      const end = text.indexOf('\n');
      if (end >= 0 || text.length > maxBytes) {
        process.stdin.off('data', onData);
        process.stdin.destroy(); // nothing more is read: a terminal or pipe left open must not keep the process alive
        if (end >= 0) resolve(text.slice(0, end));
        else reject(new PortwayError('PW_BAD_REQUEST', `no line within ${maxBytes} bytes on stdin`));
      }
    };
    process.stdin.on('data', onData);
    process.stdin.once('end', () => resolve(text));
    process.stdin.once('error', reject);
  });
}

/** All of stdin as text; at most `maxBytes` (more is PW_BAD_REQUEST). */
function readStdin(maxBytes = MAX_STDIN_BYTES): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    process.stdin.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes > maxBytes) reject(new PortwayError('PW_BAD_REQUEST', `more than ${maxBytes} bytes on stdin`));
      else chunks.push(c);
    });
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

tuneGcForStreaming();
program.parseAsync(process.argv).catch(fail);
