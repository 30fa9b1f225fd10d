/**
 * The config load sequence of STYLE.md §6 after reading: parse with the component's schema (unknown keys
 * rejected, defaults applied, cross-field checks in the schema), report every problem at once with its
 * key path as PW_CONFIG_INVALID, and deep-freeze the result.
 */
import type * as z from 'zod';
import { PortwayError } from '../protocol';

export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source: string): Readonly<z.infer<S>> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new PortwayError('PW_CONFIG_INVALID', `${source}: ${problems}`);
  }
  return deepFreeze(result.data);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
