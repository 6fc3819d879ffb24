import { runCli } from './program.js';

// `pnpm --filter @qe/cli start -- <args>` hands the script a literal leading `--`
const argv = process.argv.slice(2);
if (argv[0] === '--') argv.shift();
const code = await runCli(argv);
// stdout may be a pipe still flushing: exit once it has drained
process.stdout.write('', () => process.exit(code));
