/** Test helpers: every one that opens something takes the test's Disposer and registers its clean-up. */
export * from './disposer';
export * from './wait';
export * from './tmp';
export * from './ports';
export * from './tcp';
export * from './process';
export * from './echo-server';
export * from './http-server';
export * from './sshd';
export * from './fault-proxy';
export * from './cluster';
export * from './mosquitto';
