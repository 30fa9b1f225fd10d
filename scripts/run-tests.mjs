#!/usr/bin/env node
// Runs jest with the arguments given (test paths, -t, --selectProjects, ...), lets jest's own output
// through, then prints as the very last line of stdout: `N passed, M failed`.
//   N = numPassedTests; M = numFailedTests + suites that failed to run (numRuntimeErrorTestSuites),
//   plus 1 when jest exits non-zero without reporting a failure (crash, no tests found, bad argument).
// Exit status: 0 when M = 0 and jest exited 0; 1 otherwise (jest's status when it has one).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(repoRoot, 'package.json'));
const jestBin = join(dirname(require.resolve('jest/package.json')), 'bin', 'jest.js');
const scratch = mkdtempSync(join(tmpdir(), 'portway-jest-'));
const outputFile = join(scratch, 'results.json');

const child = spawn(
  process.execPath,
  ['--experimental-vm-modules', jestBin, '--ci', '--json', `--outputFile=${outputFile}`, ...process.argv.slice(2)],
  { cwd: repoRoot, stdio: 'inherit' },
);

const forwarded = ['SIGINT', 'SIGTERM'];
const forward = (signal) => child.kill(signal);
for (const signal of forwarded) process.on(signal, forward);

child.on('error', (err) => finish(null, null, `could not start jest: ${err.message}`));
child.on('exit', (code, signal) => finish(code, signal, null));

let isFinished = false;

function finish(code, signal, startError) {
  if (isFinished) return;
  isFinished = true;
  for (const name of forwarded) process.off(name, forward);
  const results = readResults();
  rmSync(scratch, { recursive: true, force: true });
  let passed = 0;
  let failed = 0;
  if (results !== null) {
    passed = count(results.numPassedTests);
    failed = count(results.numFailedTests) + count(results.numRuntimeErrorTestSuites);
  }
  const jestFailed = startError !== null || signal !== null || code !== 0;
  if (jestFailed && failed === 0) {
    const why = startError ?? (signal !== null ? `jest was killed by ${signal}` : `jest exited with status ${code}`);
    process.stderr.write(`run-tests: ${why}${results === null ? ' without writing results' : ''}; counted as 1 failure\n`);
    failed = 1;
  }
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 ? (typeof code === 'number' && code !== 0 ? code : 1) : 0;
}

function readResults() {
  try {
    return JSON.parse(readFileSync(outputFile, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    process.stderr.write(`run-tests: unreadable jest results: ${err.message}\n`);
    return null;
  }
}

function count(value) {
  return Number.isSafeInteger(value) && value > 0 ? value : 0;
}
