/**
 * The escape sequence of `portway console`, as a pure incremental filter over the terminal's input: the
 * escape character (Ctrl-] by default, like telnet) followed by
 *
 *   q or .            leave the console
 *   ?                 show the help line
 *   the escape char   send the escape character itself
 *   anything else     nothing is sent; the help line is shown
 *
 * Every other byte passes through unchanged, in order, whatever the chunking.
 */
export const DEFAULT_ESCAPE = 0x1d; // Ctrl-]

export type EscapeAction = { readonly kind: 'data'; readonly data: Buffer } | { readonly kind: 'quit' } | { readonly kind: 'help' };

/** "Ctrl-]" for 0x1d, "Ctrl-A" for 0x01. */
export function escapeName(escape: number): string {
  return `Ctrl-${String.fromCharCode(escape + 0x40)}`;
}

/** `--escape X`: a letter or one of @[\]^_ names Ctrl-X. */
export function parseEscape(text: string): number {
  const c = text.length === 1 ? text.toUpperCase().charCodeAt(0) : NaN;
  if (!(c >= 0x40 && c <= 0x5f)) throw new RangeError(`--escape takes one letter or one of @ [ \\ ] ^ _ (meaning Ctrl-that), got ${JSON.stringify(text).slice(0, 20)}`);
  return c - 0x40;
}

export function helpLine(escape: number): string {
  const name = escapeName(escape);
  return `${name} q: leave, ${name} ${name}: send ${name}, ${name} ?: this help`;
}

export class EscapeFilter {
  private isPending = false;
  private isQuit = false;

  constructor(private readonly escape: number = DEFAULT_ESCAPE) {}

  /** Filter one chunk of terminal input. After `quit`, nothing more is returned. */
  push(input: Buffer): EscapeAction[] {
    const out: EscapeAction[] = [];
    if (this.isQuit) return out;
    let start = 0;
    for (let i = 0; i < input.length; i++) {
      const byte = input[i] as number;
      if (this.isPending) {
        this.isPending = false;
        start = i + 1;
        if (byte === this.escape) out.push({ kind: 'data', data: Buffer.from([byte]) });
        else if (byte === 0x71 || byte === 0x51 || byte === 0x2e) {
          this.isQuit = true;
          out.push({ kind: 'quit' });
          return out;
        } else out.push({ kind: 'help' });
      } else if (byte === this.escape) {
        if (i > start) out.push({ kind: 'data', data: input.subarray(start, i) });
        this.isPending = true;
        start = i + 1;
      }
    }
    if (!this.isPending && start < input.length) out.push({ kind: 'data', data: input.subarray(start) });
    return out;
  }
}
