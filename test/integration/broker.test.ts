/**
 * The relay's brokers over real TCP sockets with real mqtt.js clients (MQTT 3.1.1): the embedded one (aedes)
 * and the external one (relay/src/broker/external-broker.ts, in front of a private Mosquitto per test), with
 * the same tests, since a device must get the same answers in both modes.
 * A plain net server stands in for the TLS/ALPN router: it hands each accepted socket to the broker with the
 * identity the test queued for it, in connection order (tests connect one client at a time).
 */
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import mqtt, { MqttClient, type IClientOptions, type IPublishPacket } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker, ExternalBroker, type BrokerIdentity, type EmbeddedBrokerOptions } from '../../relay/src/broker';
import { Disposer as StepDisposer, startFaultProxy, startMosquitto } from '../helpers';
import { PacketSizeGuard } from '../../relay/src/broker/packet-size-guard';
import { deviceSubtree, deviceTopic } from '../../protocol';

const WAIT_MS = 5_000;
const DEV_A = 'dev_aaaaaaaaaaaaaaaa';
const DEV_B = 'dev_bbbbbbbbbbbbbbbb';
const DEV_X = 'dev_xxxxxxxxxxxxxxxx';

type Disposer = () => unknown;
const disposers: Disposer[] = [];
const mosquittos = new StepDisposer();
afterEach(async () => {
  while (disposers.length > 0) await disposers.pop()?.();
  await mosquittos.run();
});

type BrokerKind = 'embedded' | 'external';
/** Which broker startHarness builds: set by each describe block's beforeAll. */
let brokerKind: BrokerKind = 'embedded';

function withTimeout<T>(promise: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** The next `event` (rejecting on 'error' or after `ms`); takes mqtt.js' typed emitters too. */
function waitFor(emitter: object, event: string, ms = WAIT_MS): Promise<unknown[]> {
  return once(emitter as EventEmitter, event, { signal: AbortSignal.timeout(ms) });
}

/** The next 'close', whatever errors come before it (events.once would reject on 'error'). */
function closeOf(emitter: object, ms = WAIT_MS): Promise<void> {
  const target = emitter as EventEmitter;
  const ignore = (): void => undefined;
  target.on('error', ignore);
  return withTimeout(new Promise<void>((resolve) => target.once('close', () => resolve())), 'close', ms).finally(() => target.off('error', ignore));
}

interface LogLine {
  readonly msg: string;
  readonly [key: string]: unknown;
}

class LogCapture extends EventEmitter {
  readonly lines: LogLine[] = [];
  write(chunk: string): void {
    const line = JSON.parse(chunk) as LogLine;
    this.lines.push(line);
    this.emit('line', line);
  }
  /** Until `count` lines `msg` matching `match` have been logged (those already logged included). */
  waitForCount(msg: string, match: (line: LogLine) => boolean, count: number): Promise<void> {
    const seen = (): number => this.lines.filter((l) => l.msg === msg && match(l)).length;
    if (seen() >= count) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        const onLine = (): void => {
          if (seen() < count) return;
          this.off('line', onLine);
          resolve();
        };
        this.on('line', onLine);
      }),
      `${count} log lines ${msg}`,
    );
  }

  waitFor(msg: string, match: (line: LogLine) => boolean = () => true): Promise<LogLine> {
    const found = this.lines.find((l) => l.msg === msg && match(l));
    if (found) return Promise.resolve(found);
    return withTimeout(
      new Promise<LogLine>((resolve) => {
        const onLine = (line: LogLine): void => {
          if (line.msg !== msg || !match(line)) return;
          this.off('line', onLine);
          resolve(line);
        };
        this.on('line', onLine);
      }),
      `log ${msg}`,
    );
  }
}

interface Harness {
  readonly broker: EmbeddedBroker | ExternalBroker;
  readonly logs: LogCapture;
  readonly port: number;
  /** A real mqtt.js client over TCP; the broker sees it as `identity`. */
  connect(identity: BrokerIdentity, options?: IClientOptions): Promise<MqttClient>;
  /** A real mqtt.js client whose CONNECT is under way (not waited for). */
  open(identity: BrokerIdentity, options?: IClientOptions): MqttClient;
  /** Like connect, but the CONNECT is expected to be refused; resolves with the CONNACK return code. */
  connectRefused(identity: BrokerIdentity, options?: IClientOptions): Promise<number>;
  /** The relay's own client over connectInternalClient(). */
  connectRelay(clientId?: string): Promise<MqttClient>;
  /** A raw socket the broker sees as `identity`. */
  rawSocket(identity: BrokerIdentity): Promise<net.Socket>;
}

/**
 * `brokerUrl` (external broker only): where the relay's upstream connections go, given the private
 * Mosquitto's URL; e.g. through a fault proxy.
 */
async function startHarness(options: Partial<EmbeddedBrokerOptions> = {}, brokerUrl?: (mosquittoUrl: string) => Promise<string>): Promise<Harness> {
  const logs = new LogCapture();
  const log = pino({ level: 'trace' }, logs);
  const brokerOptions = { connectTimeoutMs: 2_000, keepaliveMinS: 1, ...options };
  const externalUrl = async (): Promise<string> => {
    const { url } = await startMosquitto(mosquittos);
    return brokerUrl ? brokerUrl(url) : url;
  };
  const broker = brokerKind === 'embedded' ? new EmbeddedBroker({ log }, brokerOptions) : new ExternalBroker({ log }, { ...brokerOptions, url: await externalUrl() });
  const identities: BrokerIdentity[] = [];
  const server = net.createServer((socket) => {
    const identity = identities.shift();
    if (identity) broker.handleConnection(socket, identity);
    else socket.destroy();
  });
  server.on('error', (err) => logs.write(JSON.stringify({ msg: 'test.server.error', err: String(err) })));
  server.listen(0, '127.0.0.1');
  await waitFor(server, 'listening');
  disposers.push(() => new Promise((resolve) => server.close(resolve)));
  await broker.start();
  disposers.push(() => broker.stop());
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const { port } = address;

  const track = (client: MqttClient): MqttClient => {
    // Resets and refusals are what several tests provoke; tests that care wait for 'error' themselves.
    client.on('error', (err) => logs.write(JSON.stringify({ msg: 'test.client.error', err: err.message })));
    disposers.push(() => client.endAsync(true));
    return client;
  };
  const open = (identity: BrokerIdentity, options: IClientOptions): MqttClient => {
    identities.push(identity);
    const clientId = identity.kind === 'device' ? identity.deviceId : 'relay-over-tcp';
    return track(mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 4, clientId, reconnectPeriod: 0, keepalive: 30, connectTimeout: WAIT_MS, ...options }));
  };
  return {
    broker,
    logs,
    port,
    open: (identity, options = {}) => open(identity, options),
    async connect(identity, options = {}) {
      const client = open(identity, options);
      await withTimeout(waitFor(client, 'connect'), 'CONNACK');
      return client;
    },
    async connectRefused(identity, options = {}) {
      const client = open(identity, options);
      const [err] = (await waitFor(client, 'error')) as [Error & { code?: number }];
      return err.code ?? -1;
    },
    async connectRelay(clientId = 'portway-relay') {
      const client = track(new MqttClient(() => broker.connectInternalClient(), { protocolVersion: 4, clientId, reconnectPeriod: 0, keepalive: 60 }));
      await waitFor(client, 'connect');
      return client;
    },
    async rawSocket(identity) {
      identities.push(identity);
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.on('error', () => undefined); // ECONNRESET when the broker drops the connection is expected
      socket.resume(); // read (and discard) what the broker sends, so its FIN is seen
      disposers.push(() => socket.destroy());
      await waitFor(socket, 'connect');
      return socket;
    },
  };
}

const device = (deviceId: string): BrokerIdentity => ({ kind: 'device', deviceId });

/** The next message matching `topic` on `client`. */
function nextMessage(client: MqttClient, topic: string): Promise<{ payload: string; packet: IPublishPacket }> {
  return withTimeout(
    new Promise((resolve) => {
      const onMessage = (t: string, payload: Buffer, packet: IPublishPacket): void => {
        if (t !== topic) return;
        client.off('message', onMessage);
        resolve({ payload: payload.toString('utf8'), packet });
      };
      client.on('message', onMessage);
    }),
    `message on ${topic}`,
  );
}

/** Collect every message `client` receives until stopped. */
function recordMessages(client: MqttClient): { readonly topics: string[]; stop(): void } {
  const topics: string[] = [];
  const onMessage = (topic: string): void => void topics.push(topic);
  client.on('message', onMessage);
  return { topics, stop: () => client.off('message', onMessage) };
}

/** Subscribe and return the granted codes (0x80 = refused), whether or not mqtt.js treats it as an error. */
async function subscribeGranted(client: MqttClient, filter: string): Promise<number[]> {
  try {
    const grants = await client.subscribeAsync(filter, { qos: 1 });
    return grants.map((g) => g.qos);
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (!granted) throw err;
    return granted;
  }
}

/** A device proves it is still served: a QoS 1 round trip through its own subtree. */
async function roundTrip(client: MqttClient, deviceId: string): Promise<void> {
  const topic = deviceTopic(deviceId, 'telemetry');
  await client.subscribeAsync(`${deviceSubtree(deviceId)}#`, { qos: 1 });
  const received = nextMessage(client, topic);
  await client.publishAsync(topic, 'ping', { qos: 1 });
  expect((await received).payload).toBe('ping');
}

describe.each(['embedded', 'external'] as const)('%s broker over TCP', (kind) => {
  beforeAll(() => {
    brokerKind = kind;
  });

  test('a device publishes and subscribes in its own subtree and receives its commands', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    await relay.subscribeAsync('pw/v1/dev/+/reply', { qos: 1 });
    const a = await h.connect(device(DEV_A));
    expect(await subscribeGranted(a, deviceTopic(DEV_A, 'cmd'))).toEqual([1]);

    const command = nextMessage(a, deviceTopic(DEV_A, 'cmd'));
    await relay.publishAsync(deviceTopic(DEV_A, 'cmd'), '{"type":"dial"}', { qos: 1 });
    expect((await command).payload).toBe('{"type":"dial"}');

    const reply = nextMessage(relay, deviceTopic(DEV_A, 'reply'));
    await a.publishAsync(deviceTopic(DEV_A, 'reply'), '{"ok":true}', { qos: 1 });
    expect((await reply).payload).toBe('{"ok":true}');
    expect(h.broker.clientCount).toBe(2);
  });

  test('a device cannot subscribe outside its subtree: SUBACK 0x80, and it stays connected', async () => {
    const h = await startHarness();
    const a = await h.connect(device(DEV_A));
    for (const filter of ['#', '+/v1/dev/x', '$SYS/#', 'pw/v1/dev/+/cmd', deviceTopic(DEV_B, 'cmd'), `pw/v1/dev/${DEV_B}/#`]) {
      expect(await subscribeGranted(a, filter)).toEqual([128]);
    }
    await h.logs.waitFor('broker.subscribe.denied', (l) => l.deviceId === DEV_A);
    expect(a.connected).toBe(true);
    await roundTrip(a, DEV_A);
  });

  test('a device never receives messages outside its subtree', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    const a = await h.connect(device(DEV_A));
    await a.subscribeAsync(`pw/v1/dev/${DEV_A}/#`, { qos: 1 });
    const seen = recordMessages(a);
    // `.../A/#` also matches the parent level `.../A`, which lies outside the subtree: the forward check drops it.
    await relay.publishAsync(`pw/v1/dev/${DEV_A}`, 'parent', { qos: 1 });
    await relay.publishAsync(deviceTopic(DEV_B, 'cmd'), 'for-b', { qos: 1 });
    const sentinel = nextMessage(a, deviceTopic(DEV_A, 'cmd'));
    await relay.publishAsync(deviceTopic(DEV_A, 'cmd'), 'sentinel', { qos: 1 });
    await sentinel;
    seen.stop();
    expect(seen.topics).toEqual([deviceTopic(DEV_A, 'cmd')]);
  });

  test('a publish outside the subtree is acknowledged but dropped, and never retained', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    await relay.subscribeAsync('#', { qos: 1 });
    const a = await h.connect(device(DEV_A));
    const seen = recordMessages(relay);
    for (const topic of [deviceTopic(DEV_B, 'status'), deviceTopic(DEV_A, 'cmd'), 'elsewhere', '$SYS/fake']) {
      await a.publishAsync(topic, 'forged', { qos: 1, retain: true });
    }
    const sentinel = nextMessage(relay, deviceTopic(DEV_A, 'status'));
    await a.publishAsync(deviceTopic(DEV_A, 'status'), '{"online":true}', { qos: 1 });
    await sentinel;
    seen.stop();
    expect(seen.topics).toEqual([deviceTopic(DEV_A, 'status')]);
    await h.logs.waitFor('broker.publish.denied', (l) => l.reason === 'outside_subtree');

    const fresh = await h.connectRelay('portway-relay-2');
    const retained = recordMessages(fresh);
    await fresh.subscribeAsync(`pw/v1/dev/${DEV_B}/#`, { qos: 1 });
    await fresh.subscribeAsync(deviceTopic(DEV_A, 'cmd'), { qos: 1 });
    const probe = nextMessage(fresh, deviceTopic(DEV_A, 'cmd'));
    await relay.publishAsync(deviceTopic(DEV_A, 'cmd'), 'probe', { qos: 1 });
    await probe;
    retained.stop();
    expect(retained.topics).toEqual([deviceTopic(DEV_A, 'cmd')]);
    expect(a.connected).toBe(true);
  });

  test('CONNECT is refused for a foreign client ID, a will outside the subtree, a keepalive of 0 or an unsafe device ID', async () => {
    const h = await startHarness();
    expect(await h.connectRefused(device(DEV_A), { clientId: DEV_B })).toBe(2);
    await h.logs.waitFor('broker.connect.refused', (l) => l.reason === 'client_id_mismatch' && l.deviceId === DEV_A);
    expect(await h.connectRefused(device(DEV_A), { clientId: '', clean: true })).toBe(2);
    const will = { topic: deviceTopic(DEV_B, 'status'), payload: Buffer.from('{"online":false}'), qos: 1 as const, retain: true };
    expect(await h.connectRefused(device(DEV_A), { will })).toBe(5);
    expect(await h.connectRefused(device(DEV_A), { keepalive: 0 })).toBe(5);
    expect(await h.connectRefused(device('dev/+'), { clientId: 'dev/+' })).toBe(5);
    await h.logs.waitFor('broker.connect.refused', (l) => l.reason === 'bad_identity');
    expect(h.broker.clientCount).toBe(0);
    const a = await h.connect(device(DEV_A), { username: 'ignored', password: 'ignored' });
    expect(a.connected).toBe(true);
  });

  test('the relay client sees everything', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    await relay.subscribeAsync('#', { qos: 1 });
    const a = await h.connect(device(DEV_A));
    const b = await h.connect(device(DEV_B));
    const fromA = nextMessage(relay, deviceTopic(DEV_A, 'status'));
    await a.publishAsync(deviceTopic(DEV_A, 'status'), 'a', { qos: 1 });
    const fromB = nextMessage(relay, deviceTopic(DEV_B, 'telemetry'));
    await b.publishAsync(deviceTopic(DEV_B, 'telemetry'), 'b', { qos: 0 });
    expect((await fromA).payload).toBe('a');
    expect((await fromB).payload).toBe('b');
    expect(h.broker.clientCount).toBe(3);
  });

  test('retained status and the last will on an abrupt disconnect', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    await relay.subscribeAsync('pw/v1/dev/+/status', { qos: 1 });
    const status = deviceTopic(DEV_A, 'status');
    const will = { topic: status, payload: Buffer.from('{"online":false}'), qos: 1 as const, retain: true };
    const a = await h.connect(device(DEV_A), { will });
    const online = nextMessage(relay, status);
    await a.publishAsync(status, '{"online":true}', { qos: 1, retain: true });
    expect(JSON.parse((await online).payload)).toEqual({ online: true });

    const offline = nextMessage(relay, status);
    const disconnected = waitFor(h.broker, 'broker.client.disconnected');
    a.stream.destroy();
    expect(JSON.parse((await offline).payload)).toEqual({ online: false });
    const [event] = (await disconnected) as [{ deviceId: string; reason: string }];
    expect(event).toMatchObject({ deviceId: DEV_A, reason: 'closed' });

    const late = await h.connectRelay('portway-relay-2');
    const retained = nextMessage(late, status);
    await late.subscribeAsync(status, { qos: 1 });
    const { payload, packet } = await retained;
    expect(JSON.parse(payload)).toEqual({ online: false });
    expect(packet.retain).toBe(true);
  });

  test('a clean DISCONNECT publishes no will, even when the device closes its socket right after it', async () => {
    const h = await startHarness();
    const relay = await h.connectRelay();
    await relay.subscribeAsync('pw/v1/dev/+/status', { qos: 1 });
    const status = deviceTopic(DEV_A, 'status');
    const will = { topic: status, payload: Buffer.from('{"online":false,"will":true}'), qos: 1 as const, retain: false };
    const seen = recordMessages(relay);
    const a = await h.connect(device(DEV_A), { will });
    const disconnected = waitFor(h.broker, 'broker.client.disconnected');
    await a.endAsync();
    await disconnected;
    // Give a will time to arrive, then prove the relay still receives: a sentinel on the same topic.
    await new Promise((r) => setTimeout(r, 300));
    const b = await h.connect(device(DEV_B));
    const sentinel = nextMessage(relay, deviceTopic(DEV_B, 'status'));
    await b.publishAsync(deviceTopic(DEV_B, 'status'), '{"online":true}', { qos: 1 });
    await sentinel;
    seen.stop();
    expect(seen.topics).toEqual([deviceTopic(DEV_B, 'status')]);
  });

  test('a second connection with the same client ID replaces the first', async () => {
    const h = await startHarness();
    const first = await h.connect(device(DEV_A));
    const firstClosed = closeOf(first);
    const replaced = waitFor(h.broker, 'broker.session.replaced');
    const second = await h.connect(device(DEV_A));
    await firstClosed;
    const [event] = (await replaced) as [{ deviceId: string }];
    expect(event.deviceId).toBe(DEV_A);
    await h.logs.waitFor('broker.session.replaced', (l) => l.deviceId === DEV_A);
    await h.logs.waitFor('broker.client.disconnected', (l) => l.deviceId === DEV_A && l.reason === 'replaced');
    await roundTrip(second, DEV_A);
    expect(h.broker.clientCount).toBe(1);
  });

  test('connected and disconnected events carry the device ID', async () => {
    const h = await startHarness();
    const connected = waitFor(h.broker, 'broker.client.connected');
    const a = await h.connect(device(DEV_A));
    expect((await connected)[0]).toMatchObject({ deviceId: DEV_A, clientId: DEV_A, identity: { kind: 'device', deviceId: DEV_A } });
    const disconnected = waitFor(h.broker, 'broker.client.disconnected');
    await a.endAsync();
    expect((await disconnected)[0]).toMatchObject({ deviceId: DEV_A, reason: 'closed' });
    expect(h.broker.clientCount).toBe(0);
    await h.logs.waitFor('broker.client.connected', (l) => l.deviceId === DEV_A);
  });

  test('beyond maxClients a CONNECT is refused with CONNACK 3, and a replacement still works', async () => {
    const h = await startHarness({ maxClients: 1 });
    await h.connect(device(DEV_A));
    expect(await h.connectRefused(device(DEV_B))).toBe(3);
    const again = await h.connect(device(DEV_A));
    await roundTrip(again, DEV_A);
  });

  test('a connection that sends no CONNECT is closed after the connect timeout', async () => {
    const h = await startHarness({ connectTimeoutMs: 200 });
    const socket = await h.rawSocket(device(DEV_X));
    await closeOf(socket);
    await h.logs.waitFor('broker.connection.closed', (l) => l.reason === 'connect_timeout');
  });

  test('an oversized publish closes only that client', async () => {
    const h = await startHarness({ maxPacketBytes: 64 * 1024 });
    const relay = await h.connectRelay();
    await relay.subscribeAsync('pw/v1/dev/+/telemetry', { qos: 1 });
    const bystander = await h.connect(device(DEV_B));
    const a = await h.connect(device(DEV_A));
    const seen = recordMessages(relay);
    const closed = closeOf(a);
    a.publish(deviceTopic(DEV_A, 'telemetry'), Buffer.alloc(70 * 1024, 0x61), { qos: 0 });
    await closed;
    await h.logs.waitFor('broker.packet.rejected', (l) => l.deviceId === DEV_A && l.verdict === 'too_large');
    await h.logs.waitFor('broker.client.disconnected', (l) => l.deviceId === DEV_A && l.reason === 'too_large');
    const sentinel = nextMessage(relay, deviceTopic(DEV_B, 'telemetry'));
    await bystander.publishAsync(deviceTopic(DEV_B, 'telemetry'), 'ok', { qos: 1 });
    await sentinel;
    seen.stop();
    expect(seen.topics).toEqual([deviceTopic(DEV_B, 'telemetry')]);
  });

  describe('garbage closes that connection and nothing else', () => {
    const garbage: Array<{ name: string; bytes: Buffer; expectedLog?: string }> = [
      { name: 'seeded random bytes', bytes: seededBytes(4096, 0x5eed) },
      { name: 'a remaining length of 256 MiB', bytes: Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), expectedLog: 'broker.packet.rejected' },
      { name: 'a remaining length needing five bytes', bytes: Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]), expectedLog: 'broker.packet.rejected' },
      { name: 'a PUBACK before CONNECT', bytes: Buffer.from([0x40, 0x02, 0x00, 0x01]) },
      { name: 'reserved packet type 0', bytes: Buffer.from([0x00, 0x00]) },
      { name: 'the malformed packet sequence of aedes issue #612', bytes: issue612Packet() },
      { name: 'a CONNECT with an unknown protocol name', bytes: Buffer.concat([Buffer.from([0x10, 12, 0, 4]), Buffer.from('MQTX'), Buffer.from([4, 2, 0, 30, 0, 0])]) },
      { name: 'a second CONNECT', bytes: Buffer.concat([connectPacket(DEV_X), connectPacket(DEV_X)]) },
      { name: 'a CONNECT larger than the pre-authentication cap', bytes: connectPacket(DEV_X, 20_000), expectedLog: 'broker.packet.rejected' },
    ];
    test.each(garbage)('$name', async ({ bytes, expectedLog }) => {
      const h = await startHarness();
      const bystander = await h.connect(device(DEV_A));
      const socket = await h.rawSocket(device(DEV_X));
      const closed = closeOf(socket);
      socket.write(bytes);
      await closed;
      if (expectedLog) await h.logs.waitFor(expectedLog, (l) => l.deviceId === DEV_X);
      expect(bystander.connected).toBe(true);
      await roundTrip(bystander, DEV_A);
      expect(h.broker.clientCount).toBe(1);
    });
  });

  test('quiet connections with one device certificate fill only that device\'s pending room, not every device\'s', async () => {
    // A CONNECT deadline longer than the test, so the quiet connections stay pending throughout.
    const h = await startHarness({ maxPendingConnections: 6, maxPendingPerDevice: 4, connectTimeoutMs: 30_000 });
    // Eight connections as DEV_X that never send CONNECT: four wait, four are refused at once.
    const quiet = [];
    for (let i = 0; i < 8; i++) quiet.push(await h.rawSocket(device(DEV_X)));
    // A refused one may be closed before the loop gets to wait for it.
    await Promise.all(quiet.slice(4).map((socket) => (socket.destroyed ? undefined : closeOf(socket))));
    expect(h.logs.lines.filter((l) => l.msg === 'broker.connection.refused' && l.reason === 'too_many_pending_for_device' && l.deviceId === DEV_X)).toHaveLength(4);
    expect(quiet.slice(0, 4).every((socket) => !socket.destroyed)).toBe(true);
    // Another device still gets in (without the per-device cap, six quiet DEV_X connections would refuse it).
    const other = await h.connect(device(DEV_B));
    await roundTrip(other, DEV_B);
    // Once DEV_X's quiet connections are gone, DEV_X itself connects.
    await Promise.all(quiet.slice(0, 4).map((socket) => {
      const closed = closeOf(socket);
      socket.destroy();
      return closed;
    }));
    // The broker has seen all four close (and counted them out) before DEV_X comes back.
    await h.logs.waitForCount('broker.connection.closed', (l) => l.deviceId === DEV_X, 4);
    await roundTrip(await h.connect(device(DEV_X)), DEV_X);
  });

  test('stop() ends every client, is idempotent, and refuses later connections', async () => {
    const h = await startHarness();
    const a = await h.connect(device(DEV_A));
    const relay = await h.connectRelay();
    const pending = await h.rawSocket(device(DEV_X));
    const disconnected = waitFor(h.broker, 'broker.client.disconnected');
    const aClosed = closeOf(a);
    const relayClosed = closeOf(relay);
    const pendingClosed = closeOf(pending);
    await Promise.all([h.broker.stop(), h.broker.stop()]);
    await Promise.all([aClosed, relayClosed, pendingClosed]);
    expect((await disconnected)[0]).toMatchObject({ reason: 'stopped' });
    expect(h.broker.clientCount).toBe(0);
    expect(h.broker.state).toBe('stopped');
    const late = await h.rawSocket(device(DEV_B));
    await closeOf(late);
    await h.logs.waitFor('broker.connection.refused', (l) => l.reason === 'not_running');
    await expect(h.broker.start()).rejects.toMatchObject({ code: 'PW_SHUTTING_DOWN' });
  });
});

describe('external broker: the broker ends the older session before the relay sees the newer CONNACK', () => {
  // Mosquitto closes the older connection of a client ID when it takes the newer CONNECT. With latency on the
  // broker-to-relay direction, that close (a FIN with no data in flight) overtakes the newer CONNACK, which
  // is what happened by chance under load: the relay must still call it a replacement, once.
  beforeAll(() => {
    brokerKind = 'external';
  });
  const viaSlowDownstream = async (mosquittoUrl: string): Promise<string> => {
    const { proxy, host, port } = await startFaultProxy(mosquittos, { host: '127.0.0.1', port: Number(new URL(mosquittoUrl).port) });
    proxy.setLatency('downstream', { latencyMs: 300, jitterMs: 0 });
    return `mqtt://${host}:${port}`;
  };
  const disconnects = (h: Harness): Array<{ reason: string }> => {
    const seen: Array<{ reason: string }> = [];
    h.broker.on('broker.client.disconnected', (event: { reason: string }) => void seen.push(event));
    return seen;
  };

  test('the older session is reported replaced, not closed', async () => {
    const h = await startHarness({}, viaSlowDownstream);
    const first = await h.connect(device(DEV_A));
    const seen = disconnects(h);
    const firstClosed = closeOf(first);
    const replaced = waitFor(h.broker, 'broker.session.replaced');
    const second = await h.connect(device(DEV_A));
    await firstClosed;
    await replaced;
    // The older upstream closed before the newer CONNACK arrived.
    const closedAt = h.logs.lines.findIndex((l) => l.msg === 'broker.connection.closed' && l.deviceId === DEV_A);
    const replacedAt = h.logs.lines.findIndex((l) => l.msg === 'broker.session.replaced');
    expect(closedAt).toBeGreaterThanOrEqual(0);
    expect(closedAt).toBeLessThan(replacedAt);
    expect(seen).toEqual([expect.objectContaining({ deviceId: DEV_A, reason: 'replaced' })]);
    await roundTrip(second, DEV_A);
    expect(h.broker.clientCount).toBe(1);
  });

  test('a newer connection that never gets its CONNACK leaves the older session reported closed', async () => {
    const h = await startHarness({}, viaSlowDownstream);
    const first = await h.connect(device(DEV_A));
    const seen = disconnects(h);
    const firstClosed = closeOf(first);
    const second = h.open(device(DEV_A));
    await firstClosed; // the broker took the newer CONNECT; its CONNACK is still on the slow link
    expect(seen).toEqual([]);
    const disconnected = waitFor(h.broker, 'broker.client.disconnected');
    second.stream.destroy();
    expect((await disconnected)[0]).toMatchObject({ deviceId: DEV_A, reason: 'closed' });
    expect(seen).toHaveLength(1);
    expect(h.broker.clientCount).toBe(0);
    expect(h.logs.lines.some((l) => l.msg === 'broker.session.replaced')).toBe(false);
  });
});

describe('PacketSizeGuard', () => {
  const limits = { maxPacketBytes: 100, maxPreAuthBytes: 1_000 };
  const packet = (remaining: number): Buffer => Buffer.concat([Buffer.from([0x30, remaining]), Buffer.alloc(remaining)]);
  const vectors: Array<{ name: string; bytes: Buffer; verdict: string }> = [
    { name: 'PINGREQ', bytes: Buffer.from([0xc0, 0x00]), verdict: 'ok' },
    { name: 'two packets at the limit', bytes: Buffer.concat([packet(98), packet(98)]), verdict: 'ok' },
    { name: 'a two-byte length at the limit', bytes: Buffer.concat([Buffer.from([0x30, 0xe1, 0x00]), Buffer.alloc(97)]), verdict: 'ok' },
    { name: 'one byte over the limit', bytes: Buffer.from([0x30, 99]), verdict: 'too_large' },
    { name: 'a large packet after a small one', bytes: Buffer.from([0xc0, 0x00, 0x30, 0x80, 0x01]), verdict: 'too_large' },
    { name: 'a five-byte length', bytes: Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), verdict: 'malformed' },
    { name: 'more than the pre-authentication cap', bytes: Buffer.concat(Array.from({ length: 11 }, () => packet(97))), verdict: 'too_large' },
  ];
  const feed = (chunks: Buffer[]): string => {
    const guard = new PacketSizeGuard(limits);
    let verdict = 'ok';
    for (const chunk of chunks) verdict = guard.push(chunk);
    return verdict;
  };
  test.each(vectors)('$name → $verdict, whole, byte by byte and split at every boundary', ({ bytes, verdict }) => {
    expect(feed([bytes])).toBe(verdict);
    expect(feed([...bytes].map((b) => Buffer.from([b])))).toBe(verdict);
    for (let i = 1; i < bytes.length; i++) expect(feed([bytes.subarray(0, i), bytes.subarray(i)])).toBe(verdict);
  });
  test('the pre-authentication cap is lifted once authenticated', () => {
    const guard = new PacketSizeGuard(limits);
    guard.markAuthenticated();
    for (let i = 0; i < 20; i++) expect(guard.push(packet(97))).toBe('ok');
  });
});

/** Deterministic pseudo-random bytes (xorshift32), so a failure can be replayed. */
function seededBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** An MQTT 3.1.1 CONNECT (clean session, keepalive 30) with an optional padding of will-less payload bytes. */
function connectPacket(clientId: string, padTo = 0): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const variable = Buffer.concat([Buffer.from([0, 4]), Buffer.from('MQTT'), Buffer.from([4, 0x02, 0, 30])]);
  const payload = Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id]);
  const body = Buffer.concat([variable, payload, Buffer.alloc(Math.max(0, padTo - variable.length - payload.length))]);
  return Buffer.concat([Buffer.from([0x10]), encodeLength(body.length), body]);
}

function encodeLength(length: number): Buffer {
  const bytes: number[] = [];
  let rest = length;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return Buffer.from(bytes);
}

/**
 * The 26 bytes that crashed aedes through mqtt-packet (moscajs/aedes#612, fixed in mqttjs/mqtt-packet#107):
 * an MQTT 5 CONNECT, a PUBREL, then a DISCONNECT whose property length points past the end of its packet.
 */
function issue612Packet(): Buffer {
  const connect = [0x10, 16, 0, 4, ...Buffer.from('MQTT'), 5, 0x02, 0, 60, 3, 0x21, 0, 20, 0, 0];
  const pubrel = [0x62, 2, 0xd3, 0x01];
  const disconnect = [0xe0, 2, 0x00, 0x20];
  const bytes = Buffer.from([...connect, ...pubrel, ...disconnect]);
  if (bytes.length !== 26) throw new Error('issue #612 vector must be 26 bytes');
  return bytes;
}
