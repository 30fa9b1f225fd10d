/** The escape filter of `portway console` (client/src/console-escape.ts), in every chunking. */
import { DEFAULT_ESCAPE, EscapeFilter, escapeName, parseEscape, type EscapeAction } from '../../client/src/console-escape';
import { bytes, chunkings } from '../helpers/chunking';

function run(chunks: readonly Buffer[], escape = DEFAULT_ESCAPE): string[] {
  const filter = new EscapeFilter(escape);
  const out: string[] = [];
  let data: Buffer[] = [];
  const flush = (): void => {
    if (data.length) out.push(`data ${Buffer.concat(data).toString('hex')}`);
    data = [];
  };
  for (const chunk of chunks) {
    for (const a of filter.push(chunk) as EscapeAction[]) {
      if (a.kind === 'data') data.push(Buffer.from(a.data));
      else {
        flush();
        out.push(a.kind);
      }
    }
  }
  flush();
  return out;
}

describe('console escape filter', () => {
  describe.each([
    { name: 'plain keys pass, Ctrl-C included', input: bytes('61 03 62'), events: ['data 610362'] },
    { name: 'Ctrl-] q leaves; nothing after it', input: bytes('61 1d71 62'), events: ['data 61', 'quit'] },
    { name: 'Ctrl-] . leaves', input: bytes('1d2e'), events: ['quit'] },
    { name: 'Ctrl-] Ctrl-] sends one Ctrl-]', input: bytes('61 1d1d 62'), events: ['data 611d62'] },
    { name: 'Ctrl-] ? shows help', input: bytes('1d3f 63'), events: ['help', 'data 63'] },
    { name: 'Ctrl-] x shows help and sends nothing', input: bytes('64 1d78 65'), events: ['data 64', 'help', 'data 65'] },
  ])('$name', ({ input, events }) => {
    it.each(chunkings(input).map((c) => [c.name, c.chunks] as const))('%s', (_n, chunks) => expect(run(chunks)).toEqual(events));
  });

  it('parses --escape and names keys', () => {
    expect(parseEscape('a')).toBe(1);
    expect(parseEscape(']')).toBe(0x1d);
    expect(escapeName(0x1d)).toBe('Ctrl-]');
    expect(() => parseEscape('ab')).toThrow(RangeError);
    expect(() => parseEscape('1')).toThrow(RangeError);
    expect(run([bytes('0101 0171')], 1)).toEqual(['data 01', 'quit']);
  });
});
