// The HTTP/2 listener (TCP or unix socket) every Trellis server runs its Connect handler on: mutual TLS
// when given TLS material with a client CA (every client must present a certificate the cluster CA
// signed), server-only TLS without one (the join port), cleartext otherwise (the daemon's root-only unix
// socket; a lab).
import http2 from "node:http2";
import type { connectNodeAdapter } from "@connectrpc/connect-node";

/**
 * What one client may ask of a Trellis server (DESIGN.md §6: every input from outside is bounded): the
 * largest request message, streams at once on one connection, header block size, and buffered memory
 * per connection. Servers pass maxMessageBytes to connect-node as readMaxBytes.
 */
export const serverLimits = {
  maxMessageBytes: 4 << 20,
  maxConcurrentStreams: 128,
  maxHeaderListSize: 16 << 10,
  maxSessionMemoryMb: 16,
} as const;

/**
 * PEM texts: the server's certificate and key, and the CA that signs every client's certificate. Without
 * `ca`, clients present no certificate (the control plane's join port, whose one call is authorized by
 * a join token).
 */
export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
}

export interface Http2Listener {
  readonly server: http2.Http2Server | http2.Http2SecureServer;
  /** Stops accepting, lets open calls finish for up to 2 s, then cuts them. */
  close(): Promise<void>;
}

/** Serves `handler` over cleartext HTTP/2 (gRPC) on a TCP port or a unix socket path. */
export async function listenHttp2(
  handler: ReturnType<typeof connectNodeAdapter>,
  at: { port: number; host: string } | { path: string },
  tls?: TlsMaterial,
): Promise<Http2Listener> {
  const options = {
    settings: { maxConcurrentStreams: serverLimits.maxConcurrentStreams, maxHeaderListSize: serverLimits.maxHeaderListSize },
    maxSessionMemory: serverLimits.maxSessionMemoryMb,
  };
  const server = tls
    ? http2.createSecureServer(
        { ...options, ...tls, requestCert: tls.ca !== undefined, rejectUnauthorized: true, minVersion: "TLSv1.2", allowHTTP1: false },
        handler,
      )
    : http2.createServer(options, handler);
  const sessions = new Set<http2.Http2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("path" in at) server.listen(at.path, () => resolve());
    else server.listen(at.port, at.host, () => resolve());
  });
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.close();
        server.close(() => resolve());
        setTimeout(() => {
          for (const s of sessions) s.destroy();
        }, 2_000).unref();
      }),
  };
}
