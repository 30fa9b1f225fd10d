#!/usr/bin/env node
// Writes a Raspberry Pi Imager repository (os-list.json) for one Portway image; run by image/build.
// Imager's schema (rpi-imager doc/json-schema/os-list-schema.json) requires name, description, icon, url,
// extract_size, extract_sha256, image_download_size and release_date for an entry; devices, init_format and
// image_download_sha256 are optional but used: devices are Imager's hardware tags (the Zero 2 W is a "pi3-64bit"
// device to Imager), and init_format "systemd" is what the image honours: Imager then writes firstrun.sh onto the
// boot partition and adds systemd.run=/boot/firstrun.sh to cmdline.txt, which the image runs through
// /usr/lib/portway-image/imager-firstrun (image/README.md).
//
// Usage: node image/os-list.mjs --out FILE --url URL --version V --extract-size N --extract-sha256 HEX
//                                --download-size N --download-sha256 HEX [--release-date YYYY-MM-DD]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: Object.fromEntries(['out', 'url', 'version', 'extract-size', 'extract-sha256', 'download-size', 'download-sha256', 'release-date'].map((k) => [k, { type: 'string' }])),
});
for (const k of ['out', 'url', 'version', 'extract-size', 'extract-sha256', 'download-size', 'download-sha256']) {
  if (!a[k]) throw new Error(`os-list.mjs: --${k} is required`);
}
const int = (k) => {
  const n = Number(a[k]);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`os-list.mjs: --${k} must be a positive integer`);
  return n;
};
const sha = (k) => {
  if (!/^[0-9a-f]{64}$/.test(a[k])) throw new Error(`os-list.mjs: --${k} must be 64 lowercase hex digits`);
  return a[k];
};
// A small inline icon: Imager requires one, and a data: URI keeps the repository self-contained.
const ICON = `data:image/svg+xml;base64,${Buffer.from(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1d4ed8"/><path d="M8 24V8h9a5 5 0 0 1 0 10h-5v6z" fill="#fff"/></svg>',
).toString('base64')}`;

const entry = {
  name: `Portway ${a.version} (Debian 13, 64-bit)`,
  description: 'Debian 13 "trixie" with the Portway device agent: claim the device from your laptop and reach it through your relay. Raspberry Pi 3, 4 and Zero 2 W.',
  icon: ICON,
  url: a.url,
  extract_size: int('extract-size'),
  extract_sha256: sha('extract-sha256'),
  image_download_size: int('download-size'),
  image_download_sha256: sha('download-sha256'),
  release_date: a['release-date'] ?? new Date().toISOString().slice(0, 10),
  init_format: 'systemd',
  devices: ['pi3-64bit', 'pi4-64bit'],
};
writeFileSync(a.out, `${JSON.stringify({ os_list: [entry] }, null, 2)}\n`);
