/**
 * Device platform promise of issue 6 (docs/reliability.md, test plan F4): a power cut while a credential is
 * written never leaves an empty or half-written file. A child process rewrites a 64 KiB credential file in
 * a loop with the agent's writeFileAtomic (temp file, fsync, rename, fsync the directory), alternating two
 * contents; it is SIGKILLed at a random moment 200 times, and after each kill the file must be exactly one
 * of the two contents, and temp files of killed writers must not pile up.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Disposer, makeTempDir } from '../helpers';
import { seededRandom } from '../helpers/chunking';

const KILLS = 200;
const SIZE = 64 * 1024;
const WRITER = path.resolve(__dirname, '..', '..', 'dist', 'shared', 'write-file-atomic.js');

const childScript = `
const { writeFileAtomic } = require(${JSON.stringify(WRITER)});
const file = process.argv[1];
const contents = [Buffer.alloc(${SIZE}, 'A'), Buffer.alloc(${SIZE}, 'B')];
(async () => {
  process.stdout.write('ready\\n');
  for (let i = 0; ; i++) await writeFileAtomic(file, contents[i % 2], 0o600);
})();
`;

describe('credential writes under SIGKILL', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it(`${KILLS} SIGKILLs at random moments during credential writes never leave an empty or half-written file`, async () => {
    const dir = await makeTempDir(disposer, 'portway-atomic-');
    const file = path.join(dir, 'device.key');
    await fs.writeFile(file, Buffer.alloc(SIZE, 'A'), { mode: 0o600 });
    const random = seededRandom(4);
    const seen = { A: 0, B: 0 };
    const bad: string[] = [];
    for (let i = 0; i < KILLS; i++) {
      const child = spawn(process.execPath, ['-e', childScript, file], { stdio: ['ignore', 'pipe', 'inherit'] });
      disposer.add(() => child.kill('SIGKILL'));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('writer did not start')), 10_000);
        child.stdout.once('data', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      await new Promise((r) => setTimeout(r, Math.floor(random() * 30)));
      child.kill('SIGKILL');
      await exited;
      const data = await fs.readFile(file);
      const first = data[0];
      if (data.length === SIZE && (first === 0x41 || first === 0x42) && data.every((b) => b === first)) seen[first === 0x41 ? 'A' : 'B']++;
      else bad.push(`kill ${i}: ${data.length} bytes`);
    }
    const leftovers = (await fs.readdir(dir)).filter((f) => f !== 'device.key');
    process.stdout.write(`reliability.figure atomic-credential-writes ${JSON.stringify({ kills: KILLS, whole: seen, bad: bad.length, leftoverTempFiles: leftovers.length })}\n`);
    expect(bad).toEqual([]);
    // Both contents were seen: kills landed between writes of either kind, so the writer was really writing.
    expect(seen.A).toBeGreaterThan(0);
    expect(seen.B).toBeGreaterThan(0);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    // Temp files of killed writers are removed by the next write: at most the last kill's is left.
    expect(leftovers.length).toBeLessThanOrEqual(1);
  }, 120_000);
});
