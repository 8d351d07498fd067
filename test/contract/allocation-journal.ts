// The contract of the node's allocation journal (node-daemon/ipam/journal.ts), run on the Memory fake
// (unit) and on the file journal (integration), so the domain's tests on the fake mean something.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { AllocationJournal } from "../../node-daemon/ipam/journal.js";
import { type AllocationRecord, AllocationRecordSchema, AttachmentSchema } from "../../proto/gen/trellis/cni/v1/cni_pb.js";

export interface JournalUnderTest {
  readonly journal: AllocationJournal;
  /** A new journal over the same durable state, as after a restart. */
  reopen(): Promise<AllocationJournal>;
}

const record = (address: string, containerId = `c-${address}`): AllocationRecord =>
  create(AllocationRecordSchema, {
    address,
    attachment: create(AttachmentSchema, { networkName: "trellis", containerId, ifName: "eth0", netns: "/run/netns/p" }),
    hostVeth: "tr0123456789a",
    createdAtMs: 1_700_000_000_000n,
  });

const addresses = async (j: AllocationJournal) => (await j.load()).map((r) => r.address).sort();

export function describeAllocationJournalContract(name: string, make: () => Promise<JournalUnderTest>): void {
  describe(`AllocationJournal contract: ${name}`, () => {
    it("a reserved address is loaded back, whole, also after a restart", async () => {
      const { journal, reopen } = await make();
      await journal.load();
      expect(await journal.reserve(record("10.244.1.2"))).toBe(true);
      const [loaded] = await (await reopen()).load();
      expect(loaded).toEqual(record("10.244.1.2"));
    });

    it("an address can be reserved once; a second reservation is refused and changes nothing", async () => {
      const { journal } = await make();
      await journal.load();
      expect(await journal.reserve(record("10.244.1.2", "first"))).toBe(true);
      expect(await journal.reserve(record("10.244.1.2", "second"))).toBe(false);
      expect((await journal.load())[0]?.attachment?.containerId).toBe("first");
    });

    it("of many racing reservations of one address exactly one wins", async () => {
      const { journal } = await make();
      await journal.load();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => journal.reserve(record("10.244.1.9", `c${i}`))));
      expect(results.filter(Boolean)).toHaveLength(1);
    });

    it("100 concurrent reservations of distinct addresses all succeed and all survive a restart", async () => {
      const { journal, reopen } = await make();
      await journal.load();
      const all = Array.from({ length: 100 }, (_, i) => `10.244.${1 + Math.floor(i / 200)}.${(i % 200) + 2}`);
      expect(await Promise.all(all.map((a) => journal.reserve(record(a))))).toEqual(all.map(() => true));
      expect(await addresses(await reopen())).toEqual([...all].sort());
    });

    it("release forgets an address for good; releasing one that is not recorded succeeds", async () => {
      const { journal, reopen } = await make();
      await journal.load();
      await journal.reserve(record("10.244.1.2"));
      await journal.reserve(record("10.244.1.3"));
      await journal.release("10.244.1.2");
      await journal.release("10.244.1.77");
      expect(await addresses(await reopen())).toEqual(["10.244.1.3"]);
      expect(await journal.reserve(record("10.244.1.2", "again"))).toBe(true);
    });
  });
}
