/** MQTT topic builders and the parser (protocol/topics.ts). */
import { allDevicesFilter, DEVICE_PUBLISH_KINDS, DEVICE_TOPIC_KINDS, deviceSubtree, deviceTopic, parseDeviceTopic, TOPIC_PREFIX } from '../../protocol';

const DEVICE_ID = 'dev_abcdefghijklmnop';

describe('topic builders', () => {
  it('live under one versioned prefix', () => {
    expect(TOPIC_PREFIX).toBe('pw/v1');
  });

  it.each([
    ['status', 'pw/v1/dev/dev_abcdefghijklmnop/status'],
    ['services', 'pw/v1/dev/dev_abcdefghijklmnop/services'],
    ['cmd', 'pw/v1/dev/dev_abcdefghijklmnop/cmd'],
    ['reply', 'pw/v1/dev/dev_abcdefghijklmnop/reply'],
    ['telemetry', 'pw/v1/dev/dev_abcdefghijklmnop/telemetry'],
  ] as const)('deviceTopic(id, %p) is %p', (kind, topic) => {
    expect(deviceTopic(DEVICE_ID, kind)).toBe(topic);
  });

  it('builds the device subtree and the relay-wide filters', () => {
    expect(deviceSubtree(DEVICE_ID)).toBe('pw/v1/dev/dev_abcdefghijklmnop/');
    expect(allDevicesFilter('status')).toBe('pw/v1/dev/+/status');
    expect(allDevicesFilter('reply')).toBe('pw/v1/dev/+/reply');
  });

  it('every device topic lies inside the device subtree', () => {
    for (const kind of DEVICE_TOPIC_KINDS) expect(deviceTopic(DEVICE_ID, kind).startsWith(deviceSubtree(DEVICE_ID))).toBe(true);
  });

  it('a device publishes status, services, reply and telemetry, never cmd', () => {
    expect([...DEVICE_PUBLISH_KINDS].sort()).toEqual(['reply', 'services', 'status', 'telemetry']);
    expect(DEVICE_PUBLISH_KINDS).not.toContain('cmd');
  });
});

describe('parseDeviceTopic', () => {
  it('round-trips every kind', () => {
    for (const kind of DEVICE_TOPIC_KINDS) expect(parseDeviceTopic(deviceTopic(DEVICE_ID, kind))).toEqual({ deviceId: DEVICE_ID, kind });
  });

  it.each([
    '',
    'pw',
    'pw/v1',
    'pw/v1/dev',
    'pw/v1/dev/',
    'pw/v1/dev//status',
    `pw/v1/dev/${DEVICE_ID}`,
    `pw/v1/dev/${DEVICE_ID}/`,
    `pw/v1/dev/${DEVICE_ID}/unknown`,
    `pw/v1/dev/${DEVICE_ID}/Status`,
    `pw/v1/dev/${DEVICE_ID}/status/extra`,
    `pw/v2/dev/${DEVICE_ID}/status`,
    `px/v1/dev/${DEVICE_ID}/status`,
    `pw/v1/usr/${DEVICE_ID}/status`,
    `/pw/v1/dev/${DEVICE_ID}/status`,
    `pw/v1/dev/${DEVICE_ID}/constructor`,
    `pw/v1/dev/${DEVICE_ID}/__proto__`,
    '$SYS/broker/uptime',
  ])('%p is not a device topic', (topic) => {
    expect(parseDeviceTopic(topic)).toBeUndefined();
  });
});
