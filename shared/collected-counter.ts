/**
 * A Prometheus counter read from its source at scrape time (prom-client `collect`), for the relay's and the
 * agent's metrics: the source keeps the running totals, so the counter cannot drift from them. `read` gives
 * one total, or totals by the value of one label. Loads prom-client: import it only where the endpoint is on.
 */
import { Counter, type Registry } from 'prom-client';

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
