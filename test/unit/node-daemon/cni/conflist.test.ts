import { describe, expect, it } from "vitest";
import { conflistCniVersions, conflistFor } from "../../../../node-daemon/cni/plan.js";
import { supportedCniVersions } from "../../../../proto/core/protocol.js";

describe("conflistFor", () => {
  it("names the trellis network with one trellis plugin that points at the daemon's socket", () => {
    expect(conflistFor("/run/trellis/cni.sock")).toEqual({
      cniVersion: "1.0.0",
      name: "trellis",
      plugins: [{ type: "trellis", daemonSocket: "/run/trellis/cni.sock" }],
    });
  });

  it.each(["/run/trellis/cni.sock", "/tmp/t/cni.sock"])("carries the socket %s", (socket) => {
    expect((conflistFor(socket).plugins as Array<{ daemonSocket: string }>)[0]?.daemonSocket).toBe(socket);
  });

  it("takes another cniVersion", () => {
    expect(conflistFor("/run/trellis/cni.sock", "1.1.0").cniVersion).toBe("1.1.0");
  });

  it("every version the daemon may write is one the shim supports", () => {
    expect(conflistCniVersions).toEqual(["1.0.0", "1.1.0"]);
    for (const v of conflistCniVersions) expect(supportedCniVersions).toContain(v);
  });

  it("its default cniVersion is one the shim supports", () => {
    expect(supportedCniVersions).toContain(conflistFor("/run/trellis/cni.sock").cniVersion);
  });

  it("is pure: equal input, equal and independent output", () => {
    const a = conflistFor("/run/trellis/cni.sock");
    const b = conflistFor("/run/trellis/cni.sock");
    expect(a).toEqual(b);
    (a.plugins as unknown[]).push({ type: "bandwidth" });
    expect(b.plugins).toHaveLength(1);
  });
});
