// The built addon links no libuv, libssl or libcrypto of its own: its uv_*
// and OpenSSL calls must bind to the copies inside `node` (two libuvs or two
// OpenSSLs in one process is the trap STACK-FACTS describes), and it exports
// nothing but its N-API entry points (hiredis stays hidden).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const addon = path.join(__dirname, '..', 'build', 'Release', 'singleflight.node');
const tool = (name) => (spawnSync(name, ['--version'], { stdio: 'ignore' }).error ? null : name);
const binutils = tool('readelf') && tool('nm') ? false : 'readelf/nm missing (Debian: apt-get install binutils)';
const run = (...args) => {
  const out = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  return out.stdout;
};

test('the addon needs no libuv, libssl, libcrypto or libhiredis of its own', { skip: binutils }, () => {
  const needed = [...run('readelf', '-d', addon).matchAll(/\(NEEDED\).*\[(.+)\]/g)].map((m) => m[1]);
  assert.ok(needed.length > 0);
  for (const lib of needed) assert.doesNotMatch(lib, /libuv|libssl|libcrypto|hiredis/);
});

test('its uv_* and SSL_* calls are left for node to bind; it exports only N-API entry points', { skip: binutils }, () => {
  const undefinedSymbols = run('nm', '-D', '--undefined-only', addon);
  assert.match(undefinedSymbols, / U uv_close$/m);
  assert.match(undefinedSymbols, / U SSL_CTX_new$/m);
  assert.match(undefinedSymbols, / U SSL_do_handshake$/m);
  const exported = run('nm', '-D', '--defined-only', addon).trim().split('\n').map((line) => line.split(' ').pop());
  for (const name of exported) assert.match(name, /^(napi_|node_api_)/);
});
