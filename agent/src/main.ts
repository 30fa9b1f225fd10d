/** `portway agent --config FILE`: run the device agent until SIGTERM/SIGINT. */
import { PortwayError } from '../../protocol';
import { createLogger } from '../../shared/logger';
import { Agent } from './agent';
import { loadAgentConfig } from './config';

export async function runAgent(configFile: string): Promise<void> {
  const config = loadAgentConfig(configFile);
  const log = createLogger({ level: config.logLevel, name: 'portway-agent' });
  const agent = new Agent({ log }, config);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'agent.stopping');
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'agent.stop_failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await agent.start();
  } catch (err) {
    if (err instanceof PortwayError) log.error({ code: err.code, reason: err.message }, 'agent.start_failed');
    throw err;
  }
}
