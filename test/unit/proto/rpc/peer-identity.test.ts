// The caller's identity from its client certificate, parsed once per connection (not per call).
import { describe, expect, it } from "vitest";
import { peerContextValues, peerKey } from "../../../../proto/rpc/peer-identity.js";

/** A request as connect-node hands it over: an HTTP/2 stream of a session, and the per-stream socket proxy. */
function requestOn(session: object, cert: { subjectAltName?: string; serialNumber: string }, parses: { count: number }) {
  const socket = {
    getPeerX509Certificate: () => {
      parses.count++;
      return cert;
    },
  };
  return { socket, stream: { session } } as unknown as Parameters<typeof peerContextValues>[0];
}

describe("peerContextValues", () => {
  it("parses a connection's certificate at its first request and reuses it for later ones; another connection parses its own", () => {
    const parses = { count: 0 };
    const node = { subjectAltName: "URI:spiffe://trellis/node/n1", serialNumber: "00AB12" };
    const one = {};
    const first = peerContextValues(requestOn(one, node, parses)).get(peerKey);
    const second = peerContextValues(requestOn(one, node, parses)).get(peerKey);
    expect(first).toEqual({ kind: "node", name: "n1", serial: "ab12" });
    expect(second).toBe(first);
    expect(parses.count).toBe(1);
    const other = peerContextValues(requestOn({}, { serialNumber: "1" }, parses)).get(peerKey);
    expect(other).toBe("unidentified");
    expect(parses.count).toBe(2);
  });

  it("leaves a plaintext request (no TLS socket) plaintext", () => {
    const req = { socket: {}, stream: { session: {} } } as unknown as Parameters<typeof peerContextValues>[0];
    expect(peerContextValues(req).get(peerKey)).toBe("plaintext");
  });
});
