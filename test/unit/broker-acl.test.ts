import {
  authorizeDelivery,
  authorizePublish,
  authorizeSubscribe,
  isWellFormedFilter,
  MAX_ACL_TOPIC_CHARS,
  type AclDenyReason,
  type BrokerIdentity,
} from '../../relay/src/broker';
import { DEVICE_PUBLISH_KINDS, deviceTopic } from '../../protocol';

const OWN = 'dev_aaaaaaaaaaaaaaaa';
const OTHER = 'dev_bbbbbbbbbbbbbbbb';
const device: BrokerIdentity = { kind: 'device', deviceId: OWN };
const relay: BrokerIdentity = { kind: 'relay' };
const own = (rest: string): string => `pw/v1/dev/${OWN}/${rest}`;
const long = own('x'.repeat(MAX_ACL_TOPIC_CHARS));

type Row = [topic: string, expected: true | AclDenyReason];

describe('authorizePublish for a device', () => {
  const rows: Row[] = [
    [own('status'), true],
    [own('services'), true],
    [own('reply'), true],
    [own('telemetry'), true],
    [own('cmd'), 'not_publishable'],
    [own('status/extra'), 'not_publishable'],
    [own(''), 'not_publishable'],
    [`pw/v1/dev/${OWN}`, 'outside_subtree'],
    [`pw/v1/dev/${OTHER}/status`, 'outside_subtree'],
    [`pw/v1/dev/${OWN}x/status`, 'outside_subtree'],
    ['pw/v1/dev/+/status', 'outside_subtree'],
    ['#', 'outside_subtree'],
    ['$SYS/broker/x', 'outside_subtree'],
    [`pw/v2/dev/${OWN}/status`, 'outside_subtree'],
    ['', 'empty'],
    [own('sta\u0000tus'), 'nul'],
    [long, 'too_long'],
  ];
  test.each(rows)('%j → %s', (topic, expected) => {
    const decision = authorizePublish(device, topic);
    expect(decision.allowed ? true : decision.reason).toBe(expected);
  });

  test('every publishable kind is allowed through the topic builder', () => {
    for (const kind of DEVICE_PUBLISH_KINDS) expect(authorizePublish(device, deviceTopic(OWN, kind)).allowed).toBe(true);
  });
});

describe('authorizeSubscribe for a device', () => {
  const rows: Row[] = [
    [own('cmd'), true],
    [own('#'), true],
    [own('+'), true],
    [own('+/x'), true],
    [own('status'), true],
    [`pw/v1/dev/${OWN}/`, 'outside_subtree'],
    [`pw/v1/dev/${OWN}`, 'outside_subtree'],
    [`pw/v1/dev/${OWN}/cm#`, 'malformed_filter'],
    [`pw/v1/dev/${OWN}/#/x`, 'malformed_filter'],
    [`pw/v1/dev/${OWN}/c+`, 'malformed_filter'],
    ['#', 'outside_subtree'],
    ['+', 'outside_subtree'],
    ['+/v1/dev/x/cmd', 'outside_subtree'],
    ['pw/#', 'outside_subtree'],
    ['pw/v1/dev/#', 'outside_subtree'],
    ['pw/v1/dev/+/cmd', 'outside_subtree'],
    [`pw/v1/+/${OWN}/cmd`, 'outside_subtree'],
    [`pw/v1/dev/${OTHER}/cmd`, 'outside_subtree'],
    [`pw/v1/dev/${OTHER}/#`, 'outside_subtree'],
    [`pw/v1/dev/${OWN}x/#`, 'outside_subtree'],
    ['$SYS/#', 'outside_subtree'],
    [`$share/g/pw/v1/dev/${OWN}/cmd`, 'outside_subtree'],
    ['', 'empty'],
    [own('cmd\u0000'), 'nul'],
    [long, 'too_long'],
  ];
  test.each(rows)('%j → %s', (filter, expected) => {
    const decision = authorizeSubscribe(device, filter);
    expect(decision.allowed ? true : decision.reason).toBe(expected);
  });
});

describe('authorizeDelivery for a device', () => {
  const rows: Row[] = [
    [own('cmd'), true],
    [own('status'), true],
    [`pw/v1/dev/${OWN}`, 'outside_subtree'],
    [`pw/v1/dev/${OTHER}/cmd`, 'outside_subtree'],
    [`pw/v1/dev/${OWN}x/cmd`, 'outside_subtree'],
    ['$SYS/x/heartbeat', 'outside_subtree'],
  ];
  test.each(rows)('%j → %s', (topic, expected) => {
    const decision = authorizeDelivery(device, topic);
    expect(decision.allowed ? true : decision.reason).toBe(expected);
  });
});

describe('a device ID that could act as a pattern is refused everything', () => {
  const ids = ['', '+', '#', 'a/b', 'a+', '$SYS', 'a\u0000', 'x'.repeat(65)];
  test.each(ids)('%j', (deviceId) => {
    const identity: BrokerIdentity = { kind: 'device', deviceId };
    const topic = `pw/v1/dev/${deviceId}/status`;
    expect(authorizePublish(identity, topic).allowed).toBe(false);
    expect(authorizeSubscribe(identity, `pw/v1/dev/${deviceId}/#`).allowed).toBe(false);
    expect(authorizeDelivery(identity, `pw/v1/dev/${deviceId}/cmd`).allowed).toBe(false);
  });
});

describe('the relay identity', () => {
  test.each(['#', '+/x', '$SYS/#', 'pw/v1/dev/+/status', `pw/v1/dev/${OTHER}/#`, long])('may subscribe to %j', (filter) => {
    expect(authorizeSubscribe(relay, filter).allowed).toBe(true);
  });
  test.each([own('cmd'), `pw/v1/dev/${OTHER}/status`, 'anything/else', long])('may publish to %j', (topic) => {
    expect(authorizePublish(relay, topic).allowed).toBe(true);
  });
  test('receives everything', () => {
    expect(authorizeDelivery(relay, `pw/v1/dev/${OTHER}/status`).allowed).toBe(true);
  });
  test.each<Row>([
    ['', 'empty'],
    ['a\u0000b', 'nul'],
    ['a/#', 'malformed_filter'],
  ])('still cannot publish to the malformed %j', (topic, expected) => {
    const decision = authorizePublish(relay, topic);
    expect(decision.allowed ? true : decision.reason).toBe(expected);
  });
  test('still cannot subscribe to a malformed filter', () => {
    expect(authorizeSubscribe(relay, 'a/b#')).toEqual({ allowed: false, reason: 'malformed_filter' });
  });
});

describe('isWellFormedFilter', () => {
  test.each<[string, boolean]>([
    ['#', true],
    ['+', true],
    ['a/+/b', true],
    ['a/#', true],
    ['/', true],
    ['a#', false],
    ['a/#/b', false],
    ['a/b+', false],
    ['++', false],
  ])('%j → %s', (filter, expected) => {
    expect(isWellFormedFilter(filter)).toBe(expected);
  });
});
