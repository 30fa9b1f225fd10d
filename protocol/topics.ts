/**
 * MQTT topics. Every topic lives under one versioned prefix; topic strings come only from these builders.
 *
 *   pw/v1/dev/{deviceId}/status     device -> all    retained DeviceStatus; last will { online: false }
 *   pw/v1/dev/{deviceId}/services   device -> all    retained DeviceServices
 *   pw/v1/dev/{deviceId}/cmd        relay  -> device DeviceCommand (dial, pool, cert, grants)
 *   pw/v1/dev/{deviceId}/reply      device -> relay  CommandReply
 *   pw/v1/dev/{deviceId}/telemetry  device -> relay  retained DeviceTelemetry, QoS 0 (the latest sample; may be dropped)
 *
 * A device may publish and subscribe only inside pw/v1/dev/{its own id}/ (broker ACL).
 */
export const TOPIC_PREFIX = 'pw/v1';
export const DEVICE_TOPIC_KINDS = ['status', 'services', 'cmd', 'reply', 'telemetry'] as const;
export type DeviceTopicKind = (typeof DEVICE_TOPIC_KINDS)[number];
/** The kinds a device publishes itself; it only receives the others (the broker ACL enforces this). */
export const DEVICE_PUBLISH_KINDS: readonly DeviceTopicKind[] = ['status', 'services', 'reply', 'telemetry'];

export function deviceTopic(deviceId: string, kind: DeviceTopicKind): string {
  return `${TOPIC_PREFIX}/dev/${deviceId}/${kind}`;
}

export function deviceSubtree(deviceId: string): string {
  return `${TOPIC_PREFIX}/dev/${deviceId}/`;
}

/** Filters the relay subscribes to, for all devices. */
export function allDevicesFilter(kind: DeviceTopicKind): string {
  return `${TOPIC_PREFIX}/dev/+/${kind}`;
}

/** Split a device topic into its parts, or undefined when it is not one. */
export function parseDeviceTopic(topic: string): { deviceId: string; kind: DeviceTopicKind } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== TOPIC_PREFIX || parts[2] !== 'dev') return undefined;
  const kind = parts[4] as DeviceTopicKind;
  if (!DEVICE_TOPIC_KINDS.includes(kind) || !parts[3]) return undefined;
  return { deviceId: parts[3], kind };
}
