/**
 * Entry of the device bundle (dist/agent/portway-agent.js): `portway-agent --config FILE`.
 * Imports only agent/, shared/ and protocol/, so relay code and its native dependencies never reach the device.
 */
import { PortwayError } from '../../protocol';
import { runAgent } from './main';

const USAGE = 'usage: portway-agent --config FILE\n';

function main(argv: readonly string[]): void {
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
  runAgent(file).catch((err: unknown) => {
    if (err instanceof PortwayError) {
      process.stderr.write(`portway-agent: ${err.code}: ${err.message}\n`);
      process.exit(err.code === 'PW_CONFIG_INVALID' ? 78 : 1);
    }
    process.stderr.write(`portway-agent: PW_INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}

main(process.argv.slice(2));
