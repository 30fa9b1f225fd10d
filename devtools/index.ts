/**
 * Development tools shared by the tests and the benchmark: the fault proxy and delay links, an echo
 * server, a throwaway sshd, deterministic bytes, free ports and temp dirs. Never imported by agent/,
 * relay/, client/ or cli/.
 */
export * from './fault-toxics';
export { type DirectionCounters } from './fault-link';
export { type HostPort } from './fault-connection';
export * from './fault-proxy';
export * from './delay-link';
export * from './echo-server';
export * from './sshd';
export * from './pseudo-random-bytes';
export * from './ports';
export * from './temp-dir';
export * from './portway-cluster';
