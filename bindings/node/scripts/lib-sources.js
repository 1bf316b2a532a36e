// Prints the library's sources (../../lib/*.cpp, relative to binding.gyp),
// one per line, for binding.gyp's <!@(...): the addon compiles exactly what
// the CMake build compiles, so the two cannot drift apart.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const lib = path.join(__dirname, '..', '..', '..', 'lib');
for (const name of fs.readdirSync(lib).sort()) {
  if (name.endsWith('.cpp')) console.log(path.posix.join('../../lib', name));
}
