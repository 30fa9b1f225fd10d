/**
 * planFirstboot (agent/src/firstboot/firstboot-plan.ts) against the SD image's portway.toml template
 * (image/portway.toml): the template as shipped (every setting commented out) is "not configured", and the template
 * with its settings uncommented is exactly what first boot accepts. Also sshAuthorizedKeys and CRLF line endings.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NOT_CONFIGURED, planFirstboot, type FirstbootPlan } from '../../agent/src/firstboot/firstboot-plan';

const TEMPLATE = readFileSync(path.resolve(__dirname, '..', '..', 'image', 'portway.toml'), 'utf8');
const FP = 'cd'.repeat(32);
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0Fv0xQ3gq5m9v2f0x8mJk2Yl4Vb8Y0r1zQx6y7a8b me@laptop';

/** Uncomment the template's `# key = value` and `# [table]` lines (what a user does), then replace values. */
function filledTemplate(values: Record<string, string>, drop: readonly string[] = []): string {
  return TEMPLATE.split('\n')
    .map((line) => {
      const m = /^# ((\w+) = .*|\[\w+\])$/.exec(line);
      if (!m) return line;
      const key = m[2];
      if (key !== undefined && drop.includes(key)) return line;
      return key !== undefined && key in values ? `${key} = ${values[key] as string}` : (m[1] as string);
    })
    .join('\n');
}

const plan = (text: string): FirstbootPlan => {
  const p = planFirstboot(Buffer.from(text), undefined, 'portway.toml');
  if (p === NOT_CONFIGURED) throw new Error('not configured');
  return p;
};

describe('image/portway.toml template', () => {
  it('as shipped has no settings: first boot does nothing', () => {
    expect(planFirstboot(Buffer.from(TEMPLATE), undefined, 'portway.toml')).toBe(NOT_CONFIGURED);
  });

  it('with its settings filled in is accepted (claim code, SSH key, Wi-Fi)', () => {
    const p = plan(filledTemplate({ caFingerprint: `"${FP}"`, claimCode: '"KYVJ-1HGM-3BSH-SH72-MGXG-1KHS"', sshAuthorizedKeys: `["${KEY}"]` }, ['enrollKey']));
    const agent = JSON.parse(p.agentJson) as Record<string, unknown>;
    expect(agent).toMatchObject({ relay: 'relay.example.org:443', caFingerprint: FP, name: 'pump-station-7' });
    expect(p.authorizedKeys).toContain(KEY);
    expect(p.nmConnection).toContain('ssid=Field-Net');
    expect(p.summary).toMatchObject({ sshKeys: 1, wifi: { ssid: 'Field-Net', country: 'DE' } });
  });

  it('with both claimCode and enrollKey uncommented is refused', () => {
    expect(() => plan(filledTemplate({ caFingerprint: `"${FP}"` }))).toThrow(/exactly one of enrollKey or claimCode/);
  });
});

describe('planFirstboot', () => {
  const base = `relay = "10.0.0.1:443"\ncaFingerprint = "${FP}"\nenrollKey = "pwe_x"\nname = "pi"\n`;

  it('reads CRLF line endings like LF (a file saved on Windows)', () => {
    const crlf = plan(`${base}[wifi]\nssid = "Net"\ncountry = "de"\n`.replace(/\n/g, '\r\n'));
    const lf = plan(`${base}[wifi]\nssid = "Net"\ncountry = "de"\n`);
    expect(crlf.agentJson).toBe(lf.agentJson);
    expect(crlf.nmConnection).toBe(lf.nmConnection);
  });

  it.each([
    ['not a key', '["hello"]'],
    ['a key with a line break', `["${KEY}\\nssh-rsa AAAA"]`],
    ['key options', `["from=\\"10.0.0.1\\" ${KEY}"]`],
    ['a string instead of a list', `"${KEY}"`],
  ])('refuses sshAuthorizedKeys with %s', (_what, value) => {
    expect(() => plan(`${base}sshAuthorizedKeys = ${value}\n`)).toThrow(/sshAuthorizedKeys/);
  });

  it('keeps the public keys in portway.toml.applied and no secrets', () => {
    const p = plan(`${base}sshAuthorizedKeys = ["${KEY}"]\n`);
    expect(p.consumedToml).toContain(KEY);
    expect(p.consumedToml).not.toContain('pwe_x');
  });
});
