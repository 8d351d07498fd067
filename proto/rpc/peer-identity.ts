// Who is calling (DESIGN.md §6): the Trellis identity in the caller's client certificate, for handlers
// to authorize against. Set by connect-node's contextValues from the TLS socket of each request.
import type { TLSSocket } from "node:tls";
import { type ContextValues, createContextKey, createContextValues } from "@connectrpc/connect";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Identity } from "../core/identity.js";
import { parseIdentityUri } from "../core/identity.js";

/**
 * The caller: an identity; "unidentified" for a TLS client whose certificate names no Trellis identity;
 * "plaintext" when the server runs without TLS (a lab on loopback, where nobody is identified).
 */
export type Peer = CertifiedIdentity | "unidentified" | "plaintext";

/** An identity with the serial of the certificate that proved it (lowercase hex, no leading zeros). */
export interface CertifiedIdentity extends Identity {
  readonly serial: string;
}

/** The form serials are compared in everywhere: lowercase hex without leading zeros. */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, "");
}

export const peerKey = createContextKey<Peer>("plaintext", { description: "the caller's identity, from its client certificate" });

/** The identity a certificate's subjectAltName (as node:crypto prints it) names, when exactly one. */
export function identityOfSubjectAltName(san: string | undefined): Identity | undefined {
  const found = (san ?? "")
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .flatMap((n) => parseIdentityUri(n.slice("URI:".length)) ?? []);
  return found.length === 1 ? found[0] : undefined;
}

type NodeServerRequest = Parameters<NonNullable<Parameters<typeof connectNodeAdapter>[0]["contextValues"]>>[0];

/**
 * The peer of each TLS connection, parsed at its first request: a connection's client certificate cannot
 * change (HTTP/2 forbids renegotiation), and parsing it for every call was about 2% of a replica's CPU
 * with a fleet of nodes heartbeating and reporting.
 */
const peerOfSocket = new WeakMap<object, Peer>();

/** connect-node's contextValues: the peer of each request. */
export function peerContextValues(req: NodeServerRequest): ContextValues {
  const values = createContextValues();
  const socket = req.socket as Partial<TLSSocket> | undefined;
  if (socket && typeof socket.getPeerX509Certificate === "function") {
    // An HTTP/2 request's socket is a proxy made per stream; its session is the connection.
    const connection = ("stream" in req && req.stream?.session) || socket;
    let peer = peerOfSocket.get(connection);
    if (!peer) {
      const cert = socket.getPeerX509Certificate();
      const identity = identityOfSubjectAltName(cert?.subjectAltName);
      peer = identity && cert ? { ...identity, serial: normalizeSerial(cert.serialNumber) } : "unidentified";
      peerOfSocket.set(connection, peer);
    }
    values.set(peerKey, peer);
  }
  return values;
}

export function describePeer(peer: Peer): string {
  if (peer === "plaintext") return "a plaintext caller";
  if (peer === "unidentified") return "a caller whose certificate names no Trellis identity";
  return `${peer.kind} ${peer.name}`;
}
