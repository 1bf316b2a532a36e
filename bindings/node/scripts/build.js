// Builds the addon with node-gyp against the headers of the Node that runs
// this script (--nodedir: its own prefix), so nothing is downloaded.
//
//   node scripts/build.js [--debug] [--incremental]
//
// --incremental (what the CMake build uses) reuses an earlier configure and
// lets make rebuild only what changed; without it, node-gyp rebuilds from
// scratch.
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
const debug = process.argv.includes('--debug') ? ['--debug'] : [];

// The configure step lists ../../lib/*.cpp (binding.gyp); a file added or
// removed there since means configuring again.
function configuredFor() {
  const makefile = path.join(root, 'build', 'Makefile');
  const list = path.join(root, 'build', 'lib-sources.txt');
  const now = spawnSync(process.execPath, [path.join(__dirname, 'lib-sources.js')], { encoding: 'utf8' }).stdout;
  const same = fs.existsSync(makefile) && fs.existsSync(list) && fs.readFileSync(list, 'utf8') === now;
  return { same, save: () => fs.writeFileSync(list, now) };
}

function nodeGyp(...args) {
  const run = spawnSync(process.execPath, [gyp, ...args, `--nodedir=${nodedir}`, '--jobs=2', '--loglevel=warn', ...debug], { cwd: root, stdio: 'inherit' });
  if (run.status !== 0) process.exit(run.status === null ? 1 : run.status);
}

const sources = configuredFor();
if (process.argv.includes('--incremental')) {
  if (!sources.same) nodeGyp('configure');
  nodeGyp('build');
} else {
  nodeGyp('rebuild');
}
sources.save();
