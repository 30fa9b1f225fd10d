/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  testTimeout: 60000,
  detectOpenHandles: false,
  // Integration suites run real relays, agents, sshd, qemu and iperf3: one suite at a time keeps their timing
  // honest on a 2-core machine (parallel suites made stream-setup deadlines flaky).
  maxWorkers: 1,
};
