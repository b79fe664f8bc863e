// The package's root folder, for both builds: this file is copied next to the compiled modules in
// dist/esm and dist/cjs, two levels below the root.
'use strict';
const path = require('node:path');
module.exports = path.basename(path.dirname(__dirname)) === 'dist'
  ? path.resolve(__dirname, '..', '..')
  : path.resolve(__dirname, '..');
