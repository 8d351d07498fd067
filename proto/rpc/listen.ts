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
  /**
   * Connections at once, and calls in progress at once over all of them. Per-connection limits alone do
   * not bound a server: an open call holds ~40 KiB until it ends, so 1000 connections with 128 calls each
   * were 5 GiB. Sized for the 5000-node target (a route stream and a heartbeat each, on one replica).
   */
  maxConnections: 16_384,
  maxCallsInFlight: 16_384,
  /**
   * Unary calls a control-plane replica works on at once (load-shedding.ts); heartbeats are not counted.
   * A replica answers a few hundred to a thousand a second here, so 512 in progress is already about a
   * second of work: a call past it would likely miss its 5 s deadline anyway.
   */
  maxUnaryInFlight: 512,
} as const;

/** The per-listener bounds a server may tighten (the join port, open to callers without a certificate). */
export interface ListenerLimits {
  readonly maxConnections: number;
  readonly maxCallsInFlight: number;
}

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
  limits: ListenerLimits = serverLimits,
): Promise<Http2Listener> {
  const options = {
    settings: { maxConcurrentStreams: serverLimits.maxConcurrentStreams, maxHeaderListSize: serverLimits.maxHeaderListSize },
    maxSessionMemory: serverLimits.maxSessionMemoryMb,
  };
  // A call past the listener's limit is refused before it costs anything (REFUSED_STREAM: the client may
  // retry it, later or elsewhere).
  let inFlight = 0;
  const bounded = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    if (inFlight >= limits.maxCallsInFlight) {
      req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    inFlight++;
    req.stream.once("close", () => inFlight--);
    handler(req, res);
  };
  const server = tls
    ? http2.createSecureServer(
        { ...options, ...tls, requestCert: tls.ca !== undefined, rejectUnauthorized: true, minVersion: "TLSv1.2", allowHTTP1: false },
        bounded,
      )
    : http2.createServer(options, bounded);
  server.maxConnections = limits.maxConnections; // past it, a new connection is closed at once
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
