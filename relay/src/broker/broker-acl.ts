/**
 * Broker access control: who may publish to, subscribe to and receive which topics. Pure functions.
 *
 *   device D  publish    exactly pw/v1/dev/D/{status|services|reply|telemetry}  (DEVICE_PUBLISH_KINDS)
 *             subscribe  filters inside pw/v1/dev/D/ ; wildcards only below D's own id
 *             receive    topics inside pw/v1/dev/D/ only (checked again on every forward)
 *   relay     anything that is a well-formed topic or filter
 *
 * Refused for devices whatever else: empty, longer than MAX_ACL_TOPIC_CHARS, containing U+0000, `$`-topics,
 * another device's subtree, and a device ID that could itself be read as a topic pattern.
 */
import { DEVICE_PUBLISH_KINDS, deviceSubtree, deviceTopic } from '../../../protocol';

export type BrokerIdentity = { readonly kind: 'device'; readonly deviceId: string } | { readonly kind: 'relay' };

export const MAX_ACL_TOPIC_CHARS = 256;

/** Device IDs that are safe to splice into a topic: no level separator, wildcard, `$` or NUL. */
const SAFE_DEVICE_ID = /^[A-Za-z0-9._-]{1,64}$/;

export type AclDenyReason = 'empty' | 'too_long' | 'nul' | 'malformed_filter' | 'bad_identity' | 'outside_subtree' | 'not_publishable';

export type AclDecision = { readonly allowed: true } | { readonly allowed: false; readonly reason: AclDenyReason };

const ALLOW: AclDecision = Object.freeze({ allowed: true });

function deny(reason: AclDenyReason): AclDecision {
  return { allowed: false, reason };
}

/** Checks every topic and filter share: present, bounded, no NUL. */
function basicCheck(topic: string, limit: number): AclDecision {
  if (topic.length === 0) return deny('empty');
  if (topic.length > limit) return deny('too_long');
  if (topic.includes('\u0000')) return deny('nul');
  return ALLOW;
}

/** MQTT filter syntax: `+` fills a whole level, `#` fills the whole last level. */
export function isWellFormedFilter(filter: string): boolean {
  const levels = filter.split('/');
  return levels.every((level, i) => {
    if (level.includes('#')) return level === '#' && i === levels.length - 1;
    if (level.includes('+')) return level === '+';
    return true;
  });
}

/** Whether a device ID can be spliced into topics; devices with other IDs are refused everything. */
export function isSafeDeviceId(deviceId: string): boolean {
  return SAFE_DEVICE_ID.test(deviceId);
}

export function authorizePublish(identity: BrokerIdentity, topic: string): AclDecision {
  if (identity.kind === 'relay') {
    const basic = basicCheck(topic, Number.POSITIVE_INFINITY);
    if (!basic.allowed) return basic;
    return topic.includes('+') || topic.includes('#') ? deny('malformed_filter') : ALLOW;
  }
  const basic = basicCheck(topic, MAX_ACL_TOPIC_CHARS);
  if (!basic.allowed) return basic;
  if (!isSafeDeviceId(identity.deviceId)) return deny('bad_identity');
  if (!topic.startsWith(deviceSubtree(identity.deviceId))) return deny('outside_subtree');
  return DEVICE_PUBLISH_KINDS.some((kind) => deviceTopic(identity.deviceId, kind) === topic) ? ALLOW : deny('not_publishable');
}

export function authorizeSubscribe(identity: BrokerIdentity, filter: string): AclDecision {
  const basic = basicCheck(filter, identity.kind === 'relay' ? Number.POSITIVE_INFINITY : MAX_ACL_TOPIC_CHARS);
  if (!basic.allowed) return basic;
  if (!isWellFormedFilter(filter)) return deny('malformed_filter');
  if (identity.kind === 'relay') return ALLOW;
  if (!isSafeDeviceId(identity.deviceId)) return deny('bad_identity');
  const subtree = deviceSubtree(identity.deviceId);
  // The prefix is compared literally, so a wildcard can only appear in the part after the device's own ID.
  if (!filter.startsWith(subtree) || filter.length === subtree.length) return deny('outside_subtree');
  return ALLOW;
}

/** Whether a message on `topic` may be delivered to this identity (aedes authorizeForward). */
export function authorizeDelivery(identity: BrokerIdentity, topic: string): AclDecision {
  if (identity.kind === 'relay') return ALLOW;
  if (!isSafeDeviceId(identity.deviceId)) return deny('bad_identity');
  const subtree = deviceSubtree(identity.deviceId);
  return topic.startsWith(subtree) && topic.length > subtree.length ? ALLOW : deny('outside_subtree');
}
