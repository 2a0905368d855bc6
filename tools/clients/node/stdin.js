'use strict';
// readStdin resolves with all of stdin as a string (the JSON spec of
// client.js and load.js).
function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

module.exports = { readStdin };
