// The metrics listener of every Trellis program (--metrics-address): plain HTTP, GET /metrics answers with
// the program's registry in the Prometheus text format; every other path is 404, every other method 405.
// Bounded like every listener (DESIGN.md §6): few connections, short timeouts, no request body read.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { TrellisError } from "../core/errors.js";

/** What the listener needs of a prom-client Registry. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface MetricsListener {
  /** The URL to scrape, e.g. http://127.0.0.1:9464/metrics (the port actually bound, for port 0). */
  readonly url: string;
  readonly port: number;
  /** Stops accepting and cuts open connections. */
  close(): Promise<void>;
}

const limits = { maxConnections: 64, requestTimeoutMs: 10_000, headersTimeoutMs: 5_000, keepAliveTimeoutMs: 5_000 } as const;

/**
 * Serves `source` on `at`. A port in use, or an address this host does not have, rejects with a
 * TrellisError naming `flag` and saying what to do, before anything else of the program starts.
 */
export async function listenMetrics(source: MetricsSource, at: { host: string; port: number }, flag: string): Promise<MetricsListener> {
  const server = http.createServer((req, res) => void answer(source, req, res));
  server.maxConnections = limits.maxConnections;
  server.requestTimeout = limits.requestTimeoutMs;
  server.headersTimeout = limits.headersTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  const given = `${flag} ${formatHostPort(at.host, at.port)}`;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => reject(listenError(err, given, flag)));
    server.listen(at.port, at.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${formatHostPort(at.host, port)}/metrics`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function answer(source: MetricsSource, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const path = (req.url ?? "").split("?")[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" }).end("only GET /metrics\n");
    return;
  }
  if (path !== "/metrics") {
    res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found: metrics are at /metrics\n");
    return;
  }
  try {
    const text = await source.metrics();
    res.writeHead(200, { "Content-Type": source.contentType });
    res.end(req.method === "HEAD" ? undefined : text);
  } catch (err) {
    res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" }).end(`could not collect metrics: ${(err as Error).message}\n`);
  }
}

function listenError(err: NodeJS.ErrnoException, given: string, flag: string): TrellisError {
  const otherwise = `choose another with ${flag} HOST:PORT, or ${flag} off for no metrics`;
  if (err.code === "EADDRINUSE") {
    return new TrellisError("ALREADY_EXISTS", `${given}: the port is in use (another program listens there): free it, or ${otherwise}`, {
      cause: err,
    });
  }
  if (err.code === "EADDRNOTAVAIL") {
    return new TrellisError("INVALID_ARGUMENT", `${given}: this host has no such address; ${otherwise}`, { cause: err });
  }
  if (err.code === "EACCES") {
    return new TrellisError("PERMISSION_DENIED", `${given}: not allowed to listen there (a port below 1024?); ${otherwise}`, {
      cause: err,
    });
  }
  return new TrellisError("INVALID_ARGUMENT", `${given}: cannot listen there (${err.message}); ${otherwise}`, { cause: err });
}

/** HOST:PORT, with an IPv6 host in brackets. */
function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
