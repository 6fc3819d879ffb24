import { runCli } from './program.js';

const code = await runCli(process.argv.slice(2));
// stdout may be a pipe still flushing: exit once it has drained
process.stdout.write('', () => process.exit(code));
