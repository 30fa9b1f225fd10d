/**
 * The one adapter for smol-toml. Its package is "type": "module" with a CommonJS build under the "require"
 * condition, but its only type declarations are ESM, which TypeScript (module node16) will not let a CommonJS
 * file import. So it is required here, statically (esbuild bundles it), and typed by the two functions used.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const smolToml = require('smol-toml') as { parse(text: string): Record<string, unknown>; stringify(value: Record<string, unknown>): string };

export const parseToml = (text: string): Record<string, unknown> => smolToml.parse(text);
export const stringifyToml = (value: Record<string, unknown>): string => smolToml.stringify(value);
