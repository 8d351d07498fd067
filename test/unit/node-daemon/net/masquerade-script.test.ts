import { describe, expect, it } from "vitest";
import { checkNftVersion, masqueradeScript, masqueradeTable } from "../../../../node-daemon/net/masquerade-script.js";
import { trellisErrorOf } from "../../expect-error.js";

describe("masqueradeScript", () => {
  it("replaces only Trellis's own table, in one transaction: declare, delete, recreate", () => {
    const script = masqueradeScript("10.244.0.0/16");
    const lines = script
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    expect(lines.slice(0, 3)).toEqual([
      `table ip ${masqueradeTable}`,
      `delete table ip ${masqueradeTable}`,
      `table ip ${masqueradeTable} {`,
    ]);
    // never flushes the ruleset or names any other table
    expect(script).not.toMatch(/flush ruleset|flush table/);
    expect([...script.matchAll(/table ip (\S+)/g)].map((m) => m[1])).toEqual([masqueradeTable, masqueradeTable, masqueradeTable]);
  });

  it("masquerades pod traffic leaving the cluster CIDR, and never pod-to-pod traffic", () => {
    const script = masqueradeScript("10.244.0.0/16");
    expect(script).toContain("type nat hook postrouting priority 100; policy accept;");
    expect(script).toContain("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade");
    expect(script.match(/masquerade$/gm)).toHaveLength(1);
  });

  it("with masquerade off, only removes the table (whether or not it exists)", () => {
    const lines = masqueradeScript(undefined)
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    expect(lines).toEqual([`table ip ${masqueradeTable}`, `delete table ip ${masqueradeTable}`]);
  });

  it("refuses a cluster CIDR that is not canonical IPv4 CIDR text (nothing unchecked reaches nft)", () => {
    expect(trellisErrorOf(() => masqueradeScript("10.244.0.0/16; flush ruleset")).reason).toBe("INVALID_ARGUMENT");
  });
});

describe("checkNftVersion", () => {
  it.each([["nftables v1.0.6 (Lester Gooch #5)\n"], ["nftables v0.9.3 (Topsy)"], ["nftables v1.1.1 (Commodore Bullmoose #2)"]])(
    "accepts %j",
    (out) => {
      expect(() => checkNftVersion(out)).not.toThrow();
    },
  );

  it("says a too-old nft is too old, which version is needed, and what else to do", () => {
    const err = trellisErrorOf(() => checkNftVersion("nftables v0.8.2 (Tom Tom)"));
    expect(err.reason).toBe("UNAVAILABLE");
    expect(err.message).toMatch(/nft 0\.8\.2 is too old: Trellis needs nftables 0\.9\.3 or newer/);
    expect(err.message).toMatch(/--no-masquerade/);
  });

  it("says when it cannot tell the version", () => {
    expect(trellisErrorOf(() => checkNftVersion("hello")).message).toMatch(/could not read the version of nft from "hello"/);
  });
});
