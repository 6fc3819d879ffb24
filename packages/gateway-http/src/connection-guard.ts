import type { Socket } from 'node:net';

/** Where a request's socket keeps its guard record (read through HTTP/2's socket proxy too). */
const TRACK = Symbol('qe.http.connectionGuard');

interface Tracked {
  socket: Socket;
  /** Requests in progress on this connection (HTTP/2: streams). */
  active: number;
  /** When the connection last had no request in progress (or connected). */
  idleSince: number;
}

export interface ConnectionGuard {
  /** Starts watching a freshly accepted (or TLS-established) connection. */
  track(socket: Socket): void;
  /** A request started on `socket`; call the returned function once when it ended. */
  begin(socket: unknown): () => void;
  /** Connections closed because they produced no complete request in time. */
  readonly closedIdle: number;
  /** Connections open now. */
  readonly size: number;
  /** Destroys every tracked connection and stops the sweep. */
  destroyAll(): void;
  stop(): void;
}

/**
 * The same header/idle limit on every listener (HTTP/1.1 over TLS, HTTP/2 over
 * TLS, h2c), which Node enforces by itself only on its cleartext HTTP/1.1
 * server: a connection with no request in progress (none started yet, or the
 * last one ended) for longer than `idleMs` is closed. A byte-by-byte
 * ("slowloris") client never completes its headers, so it never has a request
 * in progress, and is cut off after `idleMs` however steadily it drips. Bodies
 * have their own deadline where they are read.
 */
export function createConnectionGuard(idleMs: number): ConnectionGuard {
  const tracked = new Set<Tracked>();
  let closedIdle = 0;
  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const t of tracked)
        if (t.active === 0 && now - t.idleSince > idleMs) {
          tracked.delete(t);
          closedIdle++;
          t.socket.destroy();
        }
    },
    Math.max(50, Math.min(1000, Math.floor(idleMs / 4))),
  );
  sweep.unref();
  return {
    track(socket) {
      const t: Tracked = { socket, active: 0, idleSince: Date.now() };
      (socket as unknown as Record<symbol, Tracked>)[TRACK] = t;
      tracked.add(t);
      socket.once('close', () => tracked.delete(t));
    },
    begin(socket) {
      let t: Tracked | undefined;
      try {
        t = (socket as Record<symbol, Tracked> | undefined)?.[TRACK];
      } catch {
        t = undefined; // a socket proxy that refuses the read: not one of ours
      }
      if (!t) return () => {};
      t.active++;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        t.active--;
        t.idleSince = Date.now();
      };
    },
    get closedIdle() {
      return closedIdle;
    },
    get size() {
      return tracked.size;
    },
    destroyAll() {
      for (const t of tracked) t.socket.destroy();
      tracked.clear();
    },
    stop() {
      clearInterval(sweep);
    },
  };
}
