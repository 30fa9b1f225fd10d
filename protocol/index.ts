export * from './constants';
export * from './errors';
export * from './data-frames';
export * from './messages';
export * from './topics';
export * from './e2e-frames';
export * from './datagram-frames';
