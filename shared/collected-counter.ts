/**
 * Prometheus counters and gauges read from their source at scrape time (prom-client `collect`), for the
 * relay's and the agent's metrics: the source keeps the running totals and current values, so the metrics
 * cannot drift from them. Loads prom-client: import it only where the endpoint is on.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** A gauge whose value is `read()` at each scrape. */
export function collectedGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
}

/** A counter whose total (or totals by the value of one label) is `read()` at each scrape. */
export function collectedCounter(registry: Registry, spec: { readonly name: string; readonly help: string; readonly label?: string }, read: () => number | Readonly<Record<string, number>>): void {
  const label = spec.label;
  new Counter({
    name: spec.name,
    help: spec.help,
    labelNames: label === undefined ? [] : [label],
    registers: [registry],
    collect() {
      this.reset();
      const value = read();
      if (typeof value === 'number') this.inc(value);
      else if (label !== undefined) for (const [labelValue, n] of Object.entries(value)) this.inc({ [label]: labelValue }, n);
    },
  });
}
