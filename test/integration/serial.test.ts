/**
 * Serial services through the tunnel with real parts: socat pty pairs as the serial line (the agent opens one
 * end, the test the other with serialport), real relay/agent/client processes, pyserial's rfc2217:// client
 * (Debian python3-serial) and `portway console`. Covers every byte value and 1 MiB each way at the same time, the one-writer
 * rule and read-only taps, RFC 2217 line changes applied to the port (checked in the kernel's termios of the
 * agent's end with stty), malformed Telnet, and unplug/replug (socat killed and started again at the same
 * link path) with the service listed as unavailable meanwhile.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { pseudoRandomBytes } from '../../devtools';
import { PORTWAY_BIN, type PortwayCluster } from '../../devtools/portway-cluster';
import { connectTcp, Disposer, FAST_AGENT_TIMERS, makeTempDir, runProcess, startCluster, waitFor } from '../helpers';
import { ByteTaker, openPeer, startPtyPair, ttySettings, type PtyPair } from '../helpers/pty';

jest.setTimeout(120_000);

const IO_TIMEOUT_MS = 20_000;
const BIG_TIMEOUT_MS = 60_000;
const LOG_TIMEOUT_MS = 20_000;
const MIB = 1024 * 1024;
const ROUNDS_BOTH_WAYS = 3;
const PYTHON = '/usr/bin/python3'; // Debian's, where python3-serial lives
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

describe('serial services', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let dir: string;
  let raw: PtyPair;
  let rfc: PtyPair;
  const dev = (name: string): string => path.join(dir, name);
  /** How many `event` lines (agent.stream.opened / .closed) the agent logged for `service`. */
  const streamsOf = (service: string, event: string): number => cluster.agent!.events(event).filter((e) => e.service === service).length;

  beforeAll(async () => {
    dir = await makeTempDir(suite, 'portway-serial-');
    raw = await startPtyPair(suite, dev('raw-dev'), dev('raw-peer'));
    rfc = await startPtyPair(suite, dev('rfc-dev'), dev('rfc-peer'));
    cluster = await startCluster(suite, {
      services: [
        { name: 'console', type: 'serial', path: raw.agentPath, maxTaps: 2 },
        { name: 'modem', type: 'serial', path: rfc.agentPath, mode: 'rfc2217', baudRate: 9600 },
        { name: 'plug', type: 'serial', path: dev('plug-dev') },
      ],
      agentTimers: { ...FAST_AGENT_TIMERS, serialPollMs: 200 },
    });
  });
  afterEach(() => disposer.run());
  afterAll(() => suite.run());

  const closedLines = (service: string): Record<string, unknown>[] => cluster.agent!.events('agent.stream.closed').filter((e) => e.service === service);

  it('raw: every byte value, then 1 MiB of random bytes each way at the same time (3 rounds), cross intact; no XON/XOFF on the port', async () => {
    const { port } = await cluster.connect('console');
    const peer = await openPeer(disposer, raw.peerPath);
    const atPeer = new ByteTaker(peer);
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
    const atClient = new ByteTaker(socket);
    const before = closedLines('console').length;
    // Client to port first: once the peer has these bytes, the agent holds the port open.
    socket.write(ALL_BYTES);
    expect((await atPeer.take(256, IO_TIMEOUT_MS)).equals(ALL_BYTES)).toBe(true);
    peer.write(ALL_BYTES);
    expect((await atClient.take(256, IO_TIMEOUT_MS)).equals(ALL_BYTES)).toBe(true);
    // The agent's end is raw: no software flow control (0x11/0x13 in random data are data), no CR/NL mapping.
    const { flags } = await ttySettings(raw.agentPath);
    expect(['-ixon', '-ixoff', '-ixany', '-icrnl', '-opost', '-icanon', '-isig', '-echo'].filter((f) => !flags.has(f))).toEqual([]);
    // Both directions at once: a port busy both ways used to stall for good (serial-poll-interest.ts).
    for (let round = 1; round <= ROUNDS_BOTH_WAYS; round++) {
      const up = pseudoRandomBytes(`serial up ${round}`, MIB);
      const down = pseudoRandomBytes(`serial down ${round}`, MIB);
      socket.write(up);
      peer.write(down);
      const [atPort, atUser] = await Promise.all([atPeer.take(MIB, BIG_TIMEOUT_MS), atClient.take(MIB, BIG_TIMEOUT_MS)]);
      expect({ round, up: atPort.equals(up), down: atUser.equals(down) }).toEqual({ round, up: true, down: true });
    }
    socket.end();
    await waitFor(() => closedLines('console').length > before, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'stream closed' });
    const total = ROUNDS_BOTH_WAYS * MIB + 256;
    expect(closedLines('console')[before]).toMatchObject({ outcome: 'complete', transport: 'serial', role: 'writer', bytesIn: total, bytesOut: total });
    expect(atPeer.length).toBe(0);
  });

  it('one writer at a time (PW_SERIAL_BUSY), read-only taps see the port and cannot write, Ctrl-] q leaves', async () => {
    const { port, proc } = await cluster.connect('console');
    const peer = await openPeer(disposer, raw.peerPath);
    const atPeer = new ByteTaker(peer);
    const writer = await connectTcp(disposer, { host: '127.0.0.1', port });
    const atWriter = new ByteTaker(writer);
    writer.write('first');
    expect((await atPeer.take(5, IO_TIMEOUT_MS)).toString()).toBe('first');
    const second = await connectTcp(disposer, { host: '127.0.0.1', port });
    await new Promise<void>((resolve) => second.once('close', () => resolve()));
    await waitFor(() => proc.stderr.includes('PW_SERIAL_BUSY'), { timeoutMs: IO_TIMEOUT_MS, description: 'busy reported' });
    expect(proc.stderr).toMatch(/portway: PW_SERIAL_BUSY: serial service console is in use by another stream/);

    const tap = cluster.spawnCli(['console', cluster.deviceName, 'console', '--read-only']);
    disposer.add(() => tap.stop(), 'stop tap');
    const atTap = new ByteTaker(tap.child.stdout!);
    await waitFor(() => tap.stderr.includes('connected to'), { timeoutMs: IO_TIMEOUT_MS, description: 'tap connected' });
    expect(tap.stderr).toContain('(read-only tap)');
    tap.child.stdin!.write('tap keys are discarded');
    writer.write('marker');
    expect((await atPeer.take(6, IO_TIMEOUT_MS)).toString()).toBe('marker');
    peer.write('from the device');
    expect((await atWriter.take(15, IO_TIMEOUT_MS)).toString()).toBe('from the device');
    expect((await atTap.take(15, IO_TIMEOUT_MS)).toString()).toBe('from the device');
    const tapsBefore = closedLines('console').filter((e) => e.role === 'tap').length;
    tap.child.stdin!.write(Buffer.from([0x1d, 0x71]));
    expect(await tap.exited).toBe(0);
    expect(tap.stderr).toContain('left the console');
    await waitFor(() => closedLines('console').filter((e) => e.role === 'tap').length > tapsBefore, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'tap closed' });
    expect(closedLines('console').filter((e) => e.role === 'tap')[tapsBefore]).toMatchObject({ outcome: 'complete', tapDiscardedBytes: 22 });
    expect(atPeer.length).toBe(0);
    const writersBefore = closedLines('console').filter((e) => e.role === 'writer').length;
    writer.end();
    await waitFor(() => closedLines('console').filter((e) => e.role === 'writer').length > writersBefore, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'writer closed' });
  });

  it('a port another program on the device holds (its lock) is refused with PW_SERIAL_BUSY, and served once it is free', async () => {
    // A local program (minicom, a script) with the port open; the agent may still be closing it after the
    // previous test's stream, so wait until its lock is free.
    const local = (await waitFor(() => openPeer(disposer, raw.agentPath).catch(() => undefined), { timeoutMs: IO_TIMEOUT_MS, intervalMs: 50, description: 'the agent end free' })) as Awaited<ReturnType<typeof openPeer>>;
    const { port, proc } = await cluster.connect('console');
    const refused = await connectTcp(disposer, { host: '127.0.0.1', port });
    await new Promise<void>((resolve) => refused.once('close', () => resolve()));
    await waitFor(() => proc.stderr.includes('PW_SERIAL_BUSY'), { timeoutMs: IO_TIMEOUT_MS, description: 'busy reported' });
    expect(proc.stderr).toContain(`PW_SERIAL_BUSY: serial device ${raw.agentPath} is locked by another program on the device`);
    await new Promise<void>((resolve) => local.close(() => resolve()));
    const peer = await openPeer(disposer, raw.peerPath);
    const atPeer = new ByteTaker(peer);
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
    socket.write('free now');
    expect((await atPeer.take(8, IO_TIMEOUT_MS)).toString()).toBe('free now');
    const before = closedLines('console').length;
    socket.end();
    await waitFor(() => closedLines('console').length > before, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'stream closed' });
  });

  it('portway console carries keys to the port and the port to the terminal, then leaves on Ctrl-] q', async () => {
    const peer = await openPeer(disposer, raw.peerPath);
    const atPeer = new ByteTaker(peer);
    const con = cluster.spawnCli(['console', cluster.deviceName, 'console']);
    disposer.add(() => con.stop(), 'stop console');
    const atTerminal = new ByteTaker(con.child.stdout!);
    await waitFor(() => con.stderr.includes('connected to'), { timeoutMs: IO_TIMEOUT_MS, description: 'console connected' });
    con.child.stdin!.write(Buffer.from('ls\r\x03\x1d\x1d'));
    expect((await atPeer.take(5, IO_TIMEOUT_MS)).equals(Buffer.from('ls\r\x03\x1d'))).toBe(true);
    peer.write('login: ');
    expect((await atTerminal.take(7, IO_TIMEOUT_MS)).toString()).toBe('login: ');
    con.child.stdin!.write(Buffer.from([0x1d, 0x3f]));
    await waitFor(() => con.stderr.includes('Ctrl-] q: leave'), { timeoutMs: IO_TIMEOUT_MS, description: 'help line' });
    con.child.stdin!.write(Buffer.from([0x1d, 0x71]));
    expect(await con.exited).toBe(0);
    expect(con.stderr).toContain('left the console');
  });

  it('portway console on a real terminal: raw mode while attached, the terminal restored after Ctrl-] q', async () => {
    const peer = await openPeer(disposer, raw.peerPath);
    const atPeer = new ByteTaker(peer);
    // A pty as the console's terminal (stdin, stdout and stderr), its termios read before, during and after.
    const script = `
import json, os, select, subprocess, sys, termios, time
master, slave = os.openpty()
def lflag():
    return termios.tcgetattr(slave)[3]
before = lflag()
p = subprocess.Popen([sys.argv[1], sys.argv[2], 'console', sys.argv[3], 'console'], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
out = b''
deadline = time.time() + 30
while b'connected to' not in out and time.time() < deadline and p.poll() is None:
    if select.select([master], [], [], 0.2)[0]:
        out += os.read(master, 4096)
during = lflag()
os.write(master, b'typed\\x03')
time.sleep(0.5)
os.write(master, b'\\x1dq')
code = p.wait(timeout=30)
while select.select([master], [], [], 0.2)[0]:
    out += os.read(master, 4096)
after = lflag()
flags = lambda f: {'icanon': bool(f & termios.ICANON), 'echo': bool(f & termios.ECHO), 'isig': bool(f & termios.ISIG)}
print(json.dumps({'code': code, 'before': flags(before), 'during': flags(during), 'after': flags(after), 'restored': before == after, 'output': out.decode('utf8', 'replace')}))
`;
    const result = await runProcess(disposer, PYTHON, ['-c', script, process.execPath, PORTWAY_BIN, cluster.deviceName], { timeoutMs: 90_000, env: cluster.env });
    expect(result.stderr).toBe('');
    const report = JSON.parse(result.stdout) as { code: number; before: object; during: object; after: object; restored: boolean; output: string };
    expect(report).toMatchObject({
      code: 0,
      before: { icanon: true, echo: true, isig: true },
      during: { icanon: false, echo: false, isig: false },
      after: { icanon: true, echo: true, isig: true },
      restored: true,
    });
    expect(report.output).toContain('left the console');
    // Ctrl-C went to the device as a byte, not to the console as a signal.
    expect((await atPeer.take(6, IO_TIMEOUT_MS)).equals(Buffer.from('typed\x03'))).toBe(true);
  });

  it('a device the agent may not open is refused with PW_SERIAL_PERMISSION_DENIED (the port opened as an unprivileged user)', async () => {
    // The agent's port code run as nobody (setpriv) against a pty only root may open: what an agent whose
    // user is not in dialout meets. (The cluster's agent runs as root, which no file mode stops.)
    const hub = path.join(path.dirname(PORTWAY_BIN), '..', 'agent', 'src', 'streams', 'serial-port-hub.js');
    const code = `
const { SerialPortHub } = require(${JSON.stringify(hub)});
const log = { info() {}, warn() {}, debug() {} };
const service = { name: 'console', type: 'serial', path: process.argv[1], baudRate: 115200, dataBits: 8, parity: 'none', stopBits: 1, rtscts: false, mode: 'raw', maxTaps: 0, lingerMs: 500 };
new SerialPortHub({ log }, service, { openTimeoutMs: 5000 }).acquire('writer').then(
  () => console.log(JSON.stringify({ opened: true })),
  (err) => console.log(JSON.stringify({ code: err.code, message: err.message })),
);`;
    const result = await runProcess(disposer, 'setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', code, raw.agentPath], { timeoutMs: 30_000 });
    expect(JSON.parse(result.stdout)).toEqual({ code: 'PW_SERIAL_PERMISSION_DENIED', message: `the agent may not open ${raw.agentPath} (EACCES); add its user to the dialout group` });
  });

  it('rfc2217: bytes both ways at once, then pyserial changes baud rate, framing, flow control and modem lines, and the port follows (termios of the agent end)', async () => {
    const { port } = await cluster.connect('modem');
    const peer = await openPeer(disposer, rfc.peerPath);
    const atPeer = new ByteTaker(peer);
    // Both directions at once: pyserial writes while the port's bytes come back.
    const pattern = (head: number[], n: number, mul: number, add: number): Buffer => Buffer.concat([Buffer.from(head), Buffer.from(Array.from({ length: n }, (_, i) => (i * mul + add) % 256))]);
    const up = pattern(Array.from({ length: 256 }, (_, i) => i), 65536, 7, 3);
    const down = pattern(Array.from({ length: 256 }, (_, i) => 255 - i), 65536, 11, 5);
    const script = `
import json, sys, serial
def step(name, **extra):
    print(json.dumps(dict(step=name, **extra)), flush=True)
    sys.stdin.readline()
s = serial.serial_for_url('rfc2217://127.0.0.1:${port}?timeout=10', baudrate=19200, timeout=30)
step('open')
up = bytes(range(256)) + bytes((i * 7 + 3) % 256 for i in range(65536))
down = bytes(range(255, -1, -1)) + bytes((i * 11 + 5) % 256 for i in range(65536))
s.write(up)
back = s.read(len(down))
step('received', ok=(back == down), length=len(back))
s.baudrate = 57600
step('baud')
s.bytesize = serial.SEVENBITS
s.parity = serial.PARITY_EVEN
s.stopbits = serial.STOPBITS_TWO
step('framing')
s.xonxoff = True
step('xonxoff')
s.xonxoff = False
s.rtscts = True
step('rtscts')
s.dtr = False
s.rts = False
step('lines', cts=s.cts, dsr=s.dsr, cd=s.cd)
s.close()
step('closed')
`;
    const py = spawn(PYTHON, ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    disposer.add(() => py.kill('SIGKILL'), 'kill python');
    let stderr = '';
    py.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const steps: Record<string, unknown>[] = [];
    let buffer = '';
    py.stdout.setEncoding('utf8').on('data', (t: string) => {
      buffer += t;
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        steps.push(JSON.parse(buffer.slice(0, i)) as Record<string, unknown>);
        buffer = buffer.slice(i + 1);
      }
    });
    const next = async (name: string): Promise<Record<string, unknown>> => {
      const step = await waitFor(() => steps.find((s) => s.step === name) ?? (py.exitCode !== null ? Promise.reject(new Error(`python exited: ${stderr}`)) : undefined), { timeoutMs: 30_000, intervalMs: 20, description: `pyserial step ${name}; stderr ${stderr}` });
      return step as Record<string, unknown>;
    };
    await next('open');
    expect((await ttySettings(rfc.agentPath)).speed).toBe(19200);
    peer.write(down);
    py.stdin.write('\n');
    expect((await atPeer.take(up.length, IO_TIMEOUT_MS)).equals(up)).toBe(true);
    expect(await next('received')).toMatchObject({ ok: true, length: 256 + 65536 });
    py.stdin.write('\n');
    await next('baud');
    expect((await ttySettings(rfc.agentPath)).speed).toBe(57600);
    py.stdin.write('\n');
    await next('framing');
    // The port was reopened with 7E2. A Linux pty keeps only what it has: the stop bits (and the speed); it
    // forces CS8 without parity whatever a program asks (a real UART takes all three; docs/serial.md).
    const framing = await ttySettings(rfc.agentPath);
    expect({ speed: framing.speed, cstopb: framing.flags.has('cstopb') }).toEqual({ speed: 57600, cstopb: true });
    // Flow control (SET-CONTROL) reopens the port with it; a pty keeps both kinds.
    py.stdin.write('\n');
    await next('xonxoff');
    const soft = await ttySettings(rfc.agentPath);
    expect(['ixon', 'ixoff', '-crtscts'].filter((f) => !soft.flags.has(f))).toEqual([]);
    py.stdin.write('\n');
    await next('rtscts');
    const hard = await ttySettings(rfc.agentPath);
    expect(['crtscts', '-ixon', '-ixoff', 'cstopb'].filter((f) => !hard.flags.has(f))).toEqual([]);
    expect(hard.speed).toBe(57600);
    py.stdin.write('\n');
    // A pty has no modem lines: the agent reports a peer that is always ready (documented in docs/serial.md).
    expect(await next('lines')).toMatchObject({ cts: true, dsr: true, cd: true });
    py.stdin.write('\n');
    await next('closed');
    py.stdin.end();
    expect(await new Promise((resolve) => (py.exitCode !== null ? resolve(py.exitCode) : py.once('exit', resolve)))).toBe(0);
    expect(cluster.agent!.events('agent.serial.telnet_invalid')).toEqual([]);
  });

  it('rfc2217: malformed Telnet is logged with PW_TELNET_INVALID and costs only the bad command', async () => {
    // The pyserial test's stream may still be closing at the agent (one writer at a time: PW_SERIAL_BUSY).
    await waitFor(() => streamsOf('modem', 'agent.stream.closed') === streamsOf('modem', 'agent.stream.opened'), { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'earlier modem streams closed at the agent' });
    const { port, proc } = await cluster.connect('modem');
    const peer = await openPeer(disposer, rfc.peerPath);
    const atPeer = new ByteTaker(peer);
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
    // IAC 'A'; SE without SB; SB cut by IAC WILL SGA; an unknown COM-PORT command; SET-BAUDRATE without value.
    const garbage = Buffer.from('ff41' + 'fff0' + 'fffa2c0100' + 'fffb03' + 'fffa2c2a00fff0' + 'fffa2c01fff0', 'hex');
    socket.write(Buffer.concat([Buffer.from('before|'), garbage, Buffer.from('|after')]));
    const got = await atPeer.take(13, IO_TIMEOUT_MS).catch((err: Error) => {
      throw new Error(`${err.message}; connect stderr: ${proc.stderr}; agent: ${cluster.agent!.lines.slice(-8).join('\n')}`);
    });
    expect(got.toString()).toBe('before||after');
    await waitFor(() => cluster.agent!.events('agent.serial.telnet_invalid').length >= 5, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'invalid telnet logged' });
    const reasons = cluster.agent!.events('agent.serial.telnet_invalid').map((e) => `${String(e.code)} ${String(e.reason)}`);
    expect(reasons).toEqual([
      'PW_TELNET_INVALID unknown Telnet command 0x41 after IAC',
      'PW_TELNET_INVALID IAC SE without a subnegotiation',
      'PW_TELNET_INVALID IAC 0xfb inside a subnegotiation of option 44',
      'PW_TELNET_INVALID unknown COM-PORT-OPTION command 42',
      'PW_TELNET_INVALID SET-BAUDRATE needs 4 bytes, got 0',
    ]);
    socket.end();
    expect(cluster.agent!.child.exitCode).toBeNull();
  });

  it('unplug and replug: the service is listed unavailable, streams get PW_SERVICE_UNAVAILABLE, then it is served again', async () => {
    const availability = async (): Promise<unknown> => {
      const result = await cluster.runCli(['devices', '--json'], { timeoutMs: 20_000 });
      const devices = JSON.parse(result.stdout) as { services: { name: string; available?: boolean }[] }[];
      return devices[0]?.services.find((s) => s.name === 'plug')?.available;
    };
    // Never plugged in so far: listed unavailable, streams refused with a clear code.
    await waitFor(async () => (await availability()) === false, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 300, description: 'plug unavailable' });
    const { port, proc } = await cluster.connect('plug');
    const refused = await connectTcp(disposer, { host: '127.0.0.1', port });
    await new Promise<void>((resolve) => refused.once('close', () => resolve()));
    await waitFor(() => proc.stderr.includes('PW_SERVICE_UNAVAILABLE'), { timeoutMs: IO_TIMEOUT_MS, description: 'unavailable reported' });
    expect(proc.stderr).toMatch(/PW_SERVICE_UNAVAILABLE: serial device .*plug-dev is not present/);

    for (let round = 1; round <= 2; round++) {
      const pair = await startPtyPair(disposer, dev('plug-dev'), dev(`plug-peer-${round}`));
      await waitFor(async () => (await availability()) === undefined, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 300, description: `plug available (round ${round})` });
      const peer = await openPeer(disposer, pair.peerPath);
      const atPeer = new ByteTaker(peer);
      const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
      socket.write(`round ${round}`);
      expect((await atPeer.take(7, IO_TIMEOUT_MS)).toString()).toBe(`round ${round}`);
      // Unplug while the stream is open: the stream is cut, the agent lives on and lists the port unavailable.
      const lost = cluster.agent!.events('agent.serial.port_lost').length;
      await pair.stop();
      await new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
      await waitFor(() => cluster.agent!.events('agent.serial.port_lost').length > lost, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 50, description: 'port lost logged' });
      await waitFor(async () => (await availability()) === false, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 300, description: `plug unavailable again (round ${round})` });
      expect(cluster.agent!.child.exitCode).toBeNull();
    }
  });
});
