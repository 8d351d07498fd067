import { describe, expect, it } from "vitest";
import { checkIdentity, identityUri, parseIdentityUri } from "../../../../proto/core/identity.js";

describe("identity URIs", () => {
  it.each([
    [{ kind: "node", name: "node-2" }, "spiffe://trellis/node/node-2"],
    [{ kind: "admin", name: "alice" }, "spiffe://trellis/admin/alice"],
    [{ kind: "viewer", name: "ops@example.org" }, "spiffe://trellis/viewer/ops@example.org"],
    [{ kind: "control-plane", name: "cp-1" }, "spiffe://trellis/control-plane/cp-1"],
  ] as const)("%j <-> %s", (identity, uri) => {
    expect(identityUri(identity)).toBe(uri);
    expect(parseIdentityUri(uri)).toEqual(identity);
  });

  it.each([
    "spiffe://other/node/node-2",
    "spiffe://trellis/node/node-2/extra",
    "spiffe://trellis/root/alice",
    "spiffe://trellis/node/Node_2",
    "spiffe://trellis/node/",
    "https://trellis/node/node-2",
  ])("names nobody: %s", (uri) => {
    expect(parseIdentityUri(uri)).toBeUndefined();
  });

  it("refuses a kind or a name it would not parse back", () => {
    expect(() => checkIdentity({ kind: "node", name: "-bad" })).toThrow(/not a valid node name/);
    expect(() => checkIdentity({ kind: "admin", name: "Has Space" })).toThrow(/admin name "Has Space" must be/);
  });
});
