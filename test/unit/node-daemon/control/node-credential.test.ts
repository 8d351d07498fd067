import { describe, expect, it } from "vitest";
import { type NodeCredential, renewalDelayMs } from "../../../../node-daemon/control/node-credential.js";

const cred = (notBeforeMs: number, notAfterMs: number): NodeCredential => ({
  keyPem: "",
  certificatePem: "",
  notBeforeMs,
  notAfterMs,
  serial: "1",
});

describe("renewalDelayMs", () => {
  it("renews at a jittered 70-90% of the lifetime, measured from notBefore", () => {
    const c = cred(0, 100_000);
    expect(renewalDelayMs(c, 0, () => 0)).toBe(70_000);
    expect(renewalDelayMs(c, 0, () => 1)).toBe(90_000);
    expect(renewalDelayMs(c, 50_000, () => 0.5)).toBe(30_000);
  });

  it("never schedules in the past or in a tight loop: at least 1 s", () => {
    expect(renewalDelayMs(cred(0, 100_000), 95_000, () => 0.5)).toBe(1_000);
  });
});
