/** Exit codes of `qe` (documented in the README and `qe --help`). */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

/**
 * A failure `qe` reports as one line on stderr (`qe: <message>`), followed by
 * `hint: <what to do>` when there is something to do about it.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode: number = EXIT.FAILURE,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Bad usage: exit code 2. */
export class UsageError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, hint, EXIT.USAGE);
    this.name = 'UsageError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
