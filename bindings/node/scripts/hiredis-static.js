// Prints the path of hiredis's static archive (Debian: libhiredis-dev), for
// binding.gyp: the compiler's own search finds it in the multiarch directory
// that hiredis.pc does not name.
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const compiler = process.env.CXX || 'g++';
const found = execFileSync(compiler, ['-print-file-name=libhiredis.a'], { encoding: 'utf8' }).trim();
if (!path.isAbsolute(found)) {
  console.error('singleflight: libhiredis.a not found; on Debian: apt-get install libhiredis-dev');
  process.exit(1);
}
console.log(found);
