// Builds the addon with node-gyp against the headers of the Node that runs
// this script (--nodedir: its own prefix), so nothing is downloaded.
//
//   node scripts/build.js [--debug]
//
// Node's headers come with its package: /usr/include/node from Debian's
// libnode-dev (Node 18) or from NodeSource's nodejs (Node 20+).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const nodedir = path.dirname(path.dirname(process.execPath));
const header = path.join(nodedir, 'include', 'node', 'node_api.h');
if (!fs.existsSync(header)) {
  console.error(`build: Node's headers are missing (${header}); on Debian: apt-get install libnode-dev`);
  process.exit(2);
}
const gyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
const args = [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=2'];
if (process.argv.includes('--debug')) args.push('--debug');
const run = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(run.status === null ? 1 : run.status);
