/** Public surface of the relay's MQTT broker: the embedded aedes broker and its access control. */
export {
  EmbeddedBroker,
  EMBEDDED_BROKER_DEFAULTS,
  type BrokerClientEvent,
  type BrokerDisconnectEvent,
  type BrokerState,
  type EmbeddedBrokerDeps,
  type EmbeddedBrokerEvents,
  type EmbeddedBrokerOptions,
} from './embedded-broker';
export type { DisconnectReason } from './broker-connection';
export {
  authorizeDelivery,
  authorizePublish,
  authorizeSubscribe,
  isSafeDeviceId,
  isWellFormedFilter,
  MAX_ACL_TOPIC_CHARS,
  type AclDecision,
  type AclDenyReason,
  type BrokerIdentity,
} from './broker-acl';
export { ExternalBroker, parseBrokerUrl, type BrokerEndpoint, type ExternalBrokerOptions } from './external-broker';
