/**
 * Child-process entry of a load role (producer or consumer). Speaks the
 * `ToRole`/`FromRole` protocol over the IPC channel; exits when told to or
 * when the parent goes away.
 */
import type { FromRole, ToRole } from './messages.js';
import { consumerRole, producerRole, type RoleHandler } from './roles.js';

const post = (m: FromRole) => process.send?.(m);
let handler: RoleHandler | null = null;
let chain: Promise<void> = Promise.resolve();

process.on('message', (raw) => {
  const msg = raw as ToRole;
  if (!handler && msg.cmd === 'init')
    handler = msg.init.role === 'consumer' ? consumerRole(post) : producerRole(post);
  const h = handler;
  if (!h) return;
  // one message at a time, in order; events keep flowing while a handler awaits
  const run = () =>
    h(msg).then(
      () => {
        if (msg.cmd === 'exit') process.exit(0);
      },
      (err: unknown) => {
        post({ kind: 'error', message: err instanceof Error ? err.message : String(err) });
      },
    );
  chain = chain.then(run);
});
process.on('disconnect', () => process.exit(0));
