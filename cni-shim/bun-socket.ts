// The shim's only socket: Bun's own unix-socket client, which costs nothing to load (node:net in a Bun
// binary costs about 22 ms of CPU per exec: notes/pod-path-cost.md). Runs only in the compiled shim;
// tests dial with node:net (test/support/node-dial.ts).
import type { Conn, ConnEvents, Dial } from "./grpc-unary.js";

interface BunSocket {
  write(bytes: Uint8Array): number;
  end(): void;
}

interface BunSocketHandlers {
  data(socket: BunSocket, bytes: Uint8Array): void;
  drain(socket: BunSocket): void;
  close(socket: BunSocket, err?: Error): void;
  error(socket: BunSocket, err: Error): void;
  end(socket: BunSocket): void;
}

/** The part of Bun's API used here (bun.sh/docs/api/tcp); resolves to the runtime's global. */
declare const Bun: { connect(options: { unix: string; socket: BunSocketHandlers }): Promise<BunSocket> };

export const bunDial: Dial = async (path: string, events: ConnEvents): Promise<Conn> => {
  let pending: Uint8Array[] = [];
  let closed = false;
  const flush = (socket: BunSocket) => {
    while (pending.length > 0) {
      const next = pending[0] as Uint8Array;
      const written = socket.write(next);
      if (written < 0) return; // closed: `close` reports it
      if (written < next.length) {
        pending[0] = next.subarray(written); // unbuffered write: the rest goes on `drain`
        return;
      }
      pending.shift();
    }
  };
  const end = (err?: Error) => {
    if (closed) return;
    closed = true;
    events.closed(err);
  };
  const socket = await Bun.connect({
    unix: path,
    socket: {
      data: (_s, bytes) => events.data(bytes),
      drain: flush,
      close: (_s, err) => end(err),
      error: (_s, err) => end(err),
      end: () => end(),
    },
  });
  return {
    write(bytes) {
      pending.push(bytes);
      flush(socket);
    },
    close() {
      closed = true;
      pending = [];
      socket.end();
    },
  };
};
