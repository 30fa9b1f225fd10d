/**
 * Entry of the device bundle (dist/agent/portway-agent.js): `portway-agent --config FILE`, and
 * `portway-agent firstboot [--boot DIR]` (apply portway.toml from the boot partition once; firmware-scripts/firstboot).
 * Imports only agent/, shared/ and protocol/, so relay code and its native dependencies never reach the device.
 */
import { PortwayError } from '../../protocol';
import { tuneGcForStreaming } from '../../shared/gc-tuning';
import { DEFAULT_FIRSTBOOT_PATHS, runFirstboot } from './firstboot/firstboot';
import { NOT_CONFIGURED } from './firstboot/firstboot-plan';
import { runAgent } from './main';

const USAGE = 'usage: portway-agent --config FILE\n       portway-agent firstboot [--boot DIR]\n';

/** Exit 0 when applied or nothing to do, 78 when portway.toml is invalid (nothing changed), 1 otherwise. */
function firstboot(argv: readonly string[]): void {
  const bootDir = argv[0] === '--boot' && argv.length === 2 ? (argv[1] as string) : argv.length === 0 ? DEFAULT_FIRSTBOOT_PATHS.bootDir : undefined;
  if (bootDir === undefined) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  runFirstboot({ ...DEFAULT_FIRSTBOOT_PATHS, bootDir }, say).then((summary) => {
    if (summary === undefined) say(`portway-firstboot: no ${bootDir}/portway.toml, nothing to do`);
    else if (summary === NOT_CONFIGURED) say(`portway-firstboot: ${bootDir}/portway.toml has no settings yet (every line is commented out), nothing to do. Fill it in on any computer, then reboot.`);
    else say(`portway-firstboot: applied ${JSON.stringify(summary)}`);
  }, fail);
}

function fail(err: unknown): never {
  if (err instanceof PortwayError) {
    process.stderr.write(`portway-agent: ${err.code}: ${err.message}\n`);
    process.exit(err.code === 'PW_CONFIG_INVALID' ? 78 : 1);
  }
  process.stderr.write(`portway-agent: PW_INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
}

function main(argv: readonly string[]): void {
  if (argv[0] === 'firstboot') {
    firstboot(argv.slice(1));
    return;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  if (argv.includes('--version')) {
    process.stdout.write(`${process.env.PORTWAY_VERSION ?? '0.1.0'}\n`);
    return;
  }
  const i = argv.indexOf('--config');
  const file = i >= 0 ? argv[i + 1] : undefined;
  if (!file || argv.length !== 2) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  tuneGcForStreaming();
  runAgent(file).catch(fail);
}

main(process.argv.slice(2));
