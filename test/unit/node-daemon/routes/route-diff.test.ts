import { describe, expect, it } from "vitest";
import type { KernelRoute } from "../../../../node-daemon/net/netlink.js";
import { diffRoutes } from "../../../../node-daemon/routes/route-diff.js";

const owned = (dst: string, via: string): KernelRoute => ({ dst, via, owned: true });
const foreign = (dst: string, via: string): KernelRoute => ({ dst, via, owned: false });
const want = (entries: Record<string, string>) => new Map(Object.entries(entries));

describe("diffRoutes", () => {
  it("adds missing routes", () => {
    const d = diffRoutes(want({ "10.244.2.0/24": "192.168.0.2", "10.244.3.0/24": "192.168.0.3" }), [owned("10.244.2.0/24", "192.168.0.2")]);
    expect(d).toEqual({ replace: [{ dst: "10.244.3.0/24", via: "192.168.0.3" }], remove: [], blocked: [] });
  });

  it("replaces an owned route with the wrong next hop", () => {
    const d = diffRoutes(want({ "10.244.2.0/24": "192.168.0.22" }), [owned("10.244.2.0/24", "192.168.0.2")]);
    expect(d).toEqual({ replace: [{ dst: "10.244.2.0/24", via: "192.168.0.22" }], remove: [], blocked: [] });
  });

  it("removes owned routes no longer wanted", () => {
    const d = diffRoutes(want({ "10.244.2.0/24": "192.168.0.2" }), [
      owned("10.244.2.0/24", "192.168.0.2"),
      owned("10.244.9.0/24", "192.168.0.9"),
    ]);
    expect(d).toEqual({ replace: [], remove: [{ dst: "10.244.9.0/24", via: "192.168.0.9" }], blocked: [] });
  });

  it("never removes routes it does not own", () => {
    const d = diffRoutes(want({}), [
      foreign("0.0.0.0/0", "192.168.0.254"),
      foreign("10.244.9.0/24", "192.168.0.9"),
      foreign("172.17.0.0/16", ""),
    ]);
    expect(d).toEqual({ replace: [], remove: [], blocked: [] });
  });

  it.each([
    ["with another next hop", "192.168.0.99"],
    ["with the same next hop", "192.168.0.2"],
  ])("never replaces a foreign route to a wanted destination (%s): it is blocked", (_what, via) => {
    const d = diffRoutes(want({ "10.244.2.0/24": "192.168.0.2" }), [foreign("10.244.2.0/24", via)]);
    expect(d).toEqual({ replace: [], remove: [], blocked: [{ dst: "10.244.2.0/24", via: "192.168.0.2" }] });
  });

  it("is a no-op when the kernel already matches", () => {
    const kernel = [owned("10.244.2.0/24", "192.168.0.2"), owned("10.244.3.0/24", "192.168.0.3"), foreign("0.0.0.0/0", "192.168.0.254")];
    const d = diffRoutes(want({ "10.244.2.0/24": "192.168.0.2", "10.244.3.0/24": "192.168.0.3" }), kernel);
    expect(d).toEqual({ replace: [], remove: [], blocked: [] });
  });

  it("handles everything at once", () => {
    const kernel = [
      owned("10.244.2.0/24", "192.168.0.2"), // kept
      owned("10.244.3.0/24", "192.168.0.30"), // wrong via
      owned("10.244.4.0/24", "192.168.0.4"), // stale
      foreign("10.244.5.0/24", "10.0.0.1"), // blocks a wanted one
      foreign("10.244.6.0/24", "10.0.0.1"), // not ours, not wanted
    ];
    const d = diffRoutes(
      want({
        "10.244.2.0/24": "192.168.0.2",
        "10.244.3.0/24": "192.168.0.3",
        "10.244.5.0/24": "192.168.0.5",
        "10.244.7.0/24": "192.168.0.7",
      }),
      kernel,
    );
    expect(d.replace).toEqual([
      { dst: "10.244.3.0/24", via: "192.168.0.3" },
      { dst: "10.244.7.0/24", via: "192.168.0.7" },
    ]);
    expect(d.remove).toEqual([{ dst: "10.244.4.0/24", via: "192.168.0.4" }]);
    expect(d.blocked).toEqual([{ dst: "10.244.5.0/24", via: "192.168.0.5" }]);
  });

  it("empty desired and empty kernel: nothing to do", () => {
    expect(diffRoutes(new Map(), [])).toEqual({ replace: [], remove: [], blocked: [] });
  });
});
