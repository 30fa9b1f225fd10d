/**
 * The amd64 portway-agent .deb in a throwaway Debian trixie root (mmdebstrap minbase + nodejs + adduser, chroot):
 * firmware-scripts/install.sh installs it and writes the config from its flags; postinst makes the system
 * user in dialout, enables the unit and leaves the conffile root:portway 0640; the installed agent, run as
 * `portway` in the chroot, enrolls with a real relay on loopback and serves a stream to curl; then
 * `dpkg -r` keeps config and identity, and `dpkg -P` removes both and the unit's enablement.
 * systemd itself does not run in the chroot (postinst's start step is skipped there, as in an image build).
 *
 * Needs root (chroot) and mmdebstrap; the root comes from test/helpers/debian-root.ts (a cached tarball, about
 * 35 s to build from the Debian mirror, rebuilt after 7 days). Set PORTWAY_DEB_INSTALL_TEST=0 to skip.
 */
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { writeFile, copyFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAgentConfig } from '../../agent/src/config';
import { ManagedProcess, PortwayCluster, isEvent } from '../../devtools/portway-cluster';
import { HELLO_TEXT, Disposer, makeTempDir, runProcess, startHttpServer } from '../helpers';
import { mustRun, prepareDebianRoot } from '../helpers/debian-root';

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const skip = process.env.PORTWAY_DEB_INSTALL_TEST === '0';

const setup = new Disposer();
let deb = '';
let rootfs = '';

/** The chroot's own name for a numeric id (its /etc/passwd and /etc/group, not the host's). */
function chrootName(file: 'passwd' | 'group', id: number): string | undefined {
  return readFileSync(path.join(rootfs, 'etc', file), 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[2] === String(id))?.[0];
}

beforeAll(async () => {
  if (skip) return;
  const work = await makeTempDir(setup, 'portway-deb-install-');
  const agentDir = path.join(work, 'agent');
  await mustRun(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', agentDir], { timeoutMs: 120_000 });
  await mustRun(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-deb.mjs'), '--agent-dir', agentDir, '--outdir', path.join(work, 'deb'), '--arch', 'amd64'], { timeoutMs: 120_000 });
  deb = path.join(work, 'deb', `portway-agent_${VERSION}_amd64.deb`);

  rootfs = await prepareDebianRoot(setup);
}, 900_000);
afterAll(() => setup.run());

(skip ? describe.skip : describe)('portway-agent .deb in a Debian trixie chroot', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('install.sh installs and configures it, the agent serves a stream, remove keeps config and identity, purge removes them', async () => {
    const http = await startHttpServer(disposer);
    const clusterDir = await makeTempDir(disposer, 'portway-deb-cluster-');
    const cluster = await PortwayCluster.start({ dir: clusterDir, services: [] });
    disposer.add(() => cluster.stop(), 'stop cluster');
    await cluster.agent?.stop();

    // ---- install.sh: apt-get install of the local .deb (its dependencies are already in the root), config from flags
    await copyFile(deb, path.join(rootfs, 'tmp', path.basename(deb)));
    await copyFile(path.join(ROOT, 'firmware-scripts', 'install.sh'), path.join(rootfs, 'tmp', 'install.sh'));
    await writeFile(path.join(rootfs, 'tmp', 'enroll-key'), `${cluster.enrollKey}\n`, { mode: 0o600 });
    const installArgs = ['--relay', cluster.relayAddress, '--ca-fingerprint', cluster.caFingerprint, '--name', 'pi-chroot', '--service', `web=tcp:127.0.0.1:${http.port}`, '--enroll-key-file', '/tmp/enroll-key', `/tmp/${path.basename(deb)}`];
    const installed = await mustRun(disposer, 'chroot', [rootfs, 'bash', '/tmp/install.sh', ...installArgs], { timeoutMs: 120_000 });
    expect(installed).toContain('install.sh: wrote /etc/portway/agent.json');
    expect(await mustRun(disposer, 'chroot', [rootfs, 'dpkg-query', '-W', '-f', '${Status} ${Version}', 'portway-agent'])).toBe(`install ok installed ${VERSION}`);

    // postinst: system user in dialout, unit enabled, config root:portway 0640
    expect((await mustRun(disposer, 'chroot', [rootfs, 'id', '-nG', 'portway'])).trim().split(' ').sort()).toEqual(['dialout', 'portway']);
    const wants = path.join(rootfs, 'etc/systemd/system/multi-user.target.wants/portway-agent.service');
    expect(lstatSync(wants).isSymbolicLink()).toBe(true);
    const configFile = path.join(rootfs, 'etc/portway/agent.json');
    const st = statSync(configFile);
    expect({ mode: (st.mode & 0o777).toString(8), owner: chrootName('passwd', st.uid), group: chrootName('group', st.gid) }).toEqual({ mode: '640', owner: 'root', group: 'portway' });
    const config = parseAgentConfig(JSON.parse(readFileSync(configFile, 'utf8')), 'agent.json');
    expect(config).toMatchObject({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey: cluster.enrollKey, name: 'pi-chroot', stateDir: '/var/lib/portway', services: [{ name: 'web', type: 'tcp', target: `127.0.0.1:${http.port}` }] });

    // ---- the installed agent, as systemd would run it: user portway, StateDirectory /var/lib/portway (0700)
    await mustRun(disposer, 'chroot', [rootfs, 'install', '-d', '-o', 'portway', '-g', 'portway', '-m', '0700', '/var/lib/portway']);
    const child = spawn('chroot', ['--userspec=portway:portway', '--groups=dialout', rootfs, '/usr/bin/node', '/usr/lib/portway/portway-agent.js', '--config', '/etc/portway/agent.json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const agent = new ManagedProcess(child);
    cluster.children.add(agent);
    await agent.waitForLine(isEvent('agent.enroll.done'), 60_000, 'agent.enroll.done');
    await agent.waitForLine(isEvent('agent.control.online'), 60_000, 'agent.control.online');
    const { port } = await cluster.connect('web', 'pi-chroot');
    const curl = await runProcess(disposer, 'curl', ['-sS', '--max-time', '20', `http://127.0.0.1:${port}/hello`], { timeoutMs: 30_000 });
    expect(curl.stdout).toBe(HELLO_TEXT);
    expect(await agent.stop()).toBe(0);
    const identity = path.join(rootfs, 'var/lib/portway/device.key');
    expect(chrootName('passwd', statSync(identity).uid)).toBe('portway');

    // ---- remove: files gone, conffile and identity kept
    await mustRun(disposer, 'chroot', [rootfs, 'dpkg', '--remove', 'portway-agent']);
    expect(existsSync(path.join(rootfs, 'usr/lib/portway/portway-agent.js'))).toBe(false);
    expect(existsSync(path.join(rootfs, 'lib/systemd/system/portway-agent.service'))).toBe(false);
    expect(existsSync(configFile)).toBe(true);
    expect(existsSync(identity)).toBe(true);
    expect(await mustRun(disposer, 'chroot', [rootfs, 'dpkg-query', '-W', '-f', '${Status}', 'portway-agent'])).toBe('deinstall ok config-files');

    // ---- purge: config, identity and enablement gone; the system user stays (Debian policy)
    await mustRun(disposer, 'chroot', [rootfs, 'dpkg', '--purge', 'portway-agent']);
    expect(existsSync(configFile)).toBe(false);
    expect(existsSync(path.join(rootfs, 'var/lib/portway'))).toBe(false);
    expect(existsSync(wants)).toBe(false);
    expect((await runProcess(disposer, 'chroot', [rootfs, 'dpkg-query', '-W', 'portway-agent'])).code).not.toBe(0);
    expect((await mustRun(disposer, 'chroot', [rootfs, 'getent', 'passwd', 'portway'])).startsWith('portway:')).toBe(true);
  }, 300_000);
});
