// Runs doiuse-email (caniemail's data) over one HTML file and prints its findings as JSON.
// Usage: node tests/doiuse_check.mjs FILE.html CLIENT_GLOB...   (e.g. 'gmail.*' 'outlook.*')
// Called by tests/test_clients.py, which installs doiuse-email from package.json first.
import { readFileSync } from 'node:fs';
import { doIUseEmail } from 'doiuse-email';

const [file, ...emailClients] = process.argv.slice(2);
if (!file || emailClients.length === 0) {
  process.stderr.write('usage: node doiuse_check.mjs FILE.html CLIENT_GLOB...\n');
  process.exit(2);
}
const result = doIUseEmail(readFileSync(file, 'utf8'), { emailClients });
process.stdout.write(
  JSON.stringify({ errors: result.errors ?? [], warnings: result.warnings, notes: result.notes })
);
