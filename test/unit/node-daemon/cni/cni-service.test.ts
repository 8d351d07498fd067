import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { CniService, type NodeLease } from "../../../../node-daemon/cni/cni-service.js";
import { hostVethName } from "../../../../node-daemon/net/names.js";
import type { LinkInfo } from "../../../../node-daemon/net/netlink.js";
import { Cidr, parseIpv4 } from "../../../../proto/common/cidr.js";
import { TrellisError } from "../../../../proto/common/errors.js";
import { AllocationRecordSchema, AttachmentSchema, type AllocationRecord, type Attachment } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";
import { MemoryAllocationJournal, RecordingNetlink } from "../../../support/fakes.js";
import { rejectsWith } from "../../expect-error.js";

const lease: NodeLease = { subnet: Cidr.parse("10.244.3.0/24"), bridgeName: "trellis0", mtu: 1450 };
const smallLease: NodeLease = { subnet: Cidr.parse("10.244.3.8/29"), bridgeName: "trellis0", mtu: 1450 };

const attachment = (containerId: string, ifName = "eth0"): Attachment =>
  create(AttachmentSchema, { networkName: "trellis", containerId, ifName, netns: `/var/run/netns/${containerId}`, podNamespace: "default", podName: `pod-${containerId}` });

const record = (address: string, a: Attachment, createdAtMs: bigint): AllocationRecord =>
  create(AllocationRecordSchema, { address, attachment: a, hostVeth: hostVethName(a.containerId, a.ifName), createdAtMs });

interface Setup {
  service: CniService;
  net: RecordingNetlink;
  journal: MemoryAllocationJournal;
}

async function started(opts: { lease?: NodeLease; links?: LinkInfo[]; records?: AllocationRecord[]; missingNetns?: string[] } = {}): Promise<Setup> {
  const net = new RecordingNetlink(opts.links ?? []);
  const journal = new MemoryAllocationJournal(opts.records ?? []);
  let now = 1_000;
  const missing = new Set(opts.missingNetns ?? []);
  const service = new CniService({
    net,
    journal,
    log: pino({ level: "silent" }),
    clock: () => now++,
    pathExists: async (path) => !missing.has(path),
  });
  await service.start(opts.lease ?? lease);
  return { service, net, journal };
}

const podAddressOf = async (p: Promise<{ ips: Array<{ address: string }> }>) => (await p).ips[0]?.address;
const memoryAddresses = (s: CniService) => s.allocations.map((r) => r.address).sort((a, b) => Number(parseIpv4(a) - parseIpv4(b)));

describe("CniService.start", () => {
  it("is not ready before start and refuses ADD with UNAVAILABLE", async () => {
    const service = new CniService({
      net: new RecordingNetlink(),
      journal: new MemoryAllocationJournal(),
      log: pino({ level: "silent" }),
      clock: () => 0,
      pathExists: async () => true,
    });
    expect(service.ready).toBe(false);
    await rejectsWith(service.add(attachment("a1")), "UNAVAILABLE");
  });

  it("ensures the bridge with the gateway address and turns on forwarding", async () => {
    const { service, net } = await started();
    expect(service.ready).toBe(true);
    expect(net.callsOf("ensureBridge").map((c) => c.bridge)).toEqual([{ name: "trellis0", mac: "0a:5a:0a:f4:03:01", address: "10.244.3.1/24", mtu: 1450 }]);
    expect(net.forwarding).toBe(true);
    expect(net.links.get("trellis0")?.kind).toBe("bridge");
  });
});

describe("CniService.add", () => {
  it("allocates .2, then .3, records them durably and creates the veths", async () => {
    const { service, net, journal } = await started();
    const first = await service.add(attachment("a1"));
    const second = await service.add(attachment("a2"));
    expect(first.ips[0]).toMatchObject({ address: "10.244.3.2/24", gateway: "10.244.3.1", interface: 2 });
    expect(second.ips[0]?.address).toBe("10.244.3.3/24");
    expect(journal.addresses).toEqual(["10.244.3.2", "10.244.3.3"]);
    expect(journal.find("10.244.3.2")).toMatchObject({ hostVeth: hostVethName("a1", "eth0"), attachment: { containerId: "a1", ifName: "eth0" } });
    expect(memoryAddresses(service)).toEqual(["10.244.3.2", "10.244.3.3"]);
    expect(net.callsOf("addVeth").map((c) => [c.veth.hostName, c.veth.podAddress, c.veth.netns, c.veth.bridge])).toEqual([
      [hostVethName("a1", "eth0"), "10.244.3.2/24", "/var/run/netns/a1", "trellis0"],
      [hostVethName("a2", "eth0"), "10.244.3.3/24", "/var/run/netns/a2", "trellis0"],
    ]);
  });

  it("the same attachment twice is ALREADY_EXISTS and changes nothing", async () => {
    const { service, net, journal } = await started();
    await service.add(attachment("a1"));
    const callsBefore = net.calls.length;
    const err = await rejectsWith(service.add(attachment("a1")), "ALREADY_EXISTS");
    expect(err.message).toContain("10.244.3.2");
    expect(net.calls.length).toBe(callsBefore);
    expect(journal.addresses).toEqual(["10.244.3.2"]);
    expect(memoryAddresses(service)).toEqual(["10.244.3.2"]);
  });

  it("the same container with another interface is a separate attachment", async () => {
    const { service } = await started();
    await service.add(attachment("a1", "eth0"));
    expect(await podAddressOf(service.add(attachment("a1", "net1")))).toBe("10.244.3.3/24");
  });

  it("an addVeth failure releases the address from the journal and from memory", async () => {
    const { service, net, journal } = await started({ lease: smallLease });
    net.failAddVeth = new TrellisError("KERNEL", "ip link add failed");
    await rejectsWith(service.add(attachment("a1")), "KERNEL");
    expect(journal.addresses).toEqual([]);
    expect(service.allocations).toEqual([]);

    // Memory really forgot it: all 5 addresses of the /29, the failed one included, can still be handed out.
    net.failAddVeth = undefined;
    const got: string[] = [];
    for (const id of ["b1", "b2", "b3", "b4", "b5"]) got.push((await podAddressOf(service.add(attachment(id)))) ?? "");
    expect(got.sort()).toEqual(["10.244.3.10/29", "10.244.3.11/29", "10.244.3.12/29", "10.244.3.13/29", "10.244.3.14/29"]);
  });

  it.each([
    ["a bad container id", create(AttachmentSchema, { ...attachment("x"), containerId: "../etc" }), "INVALID_ARGUMENT"],
    ["a bad interface name", create(AttachmentSchema, { ...attachment("x"), ifName: "a-name-too-long-x" }), "INVALID_ARGUMENT"],
    ["no netns", create(AttachmentSchema, { ...attachment("x"), netns: "" }), "INVALID_ARGUMENT"],
    ["a netns that does not exist", attachment("gone"), "INVALID_ARGUMENT"],
  ] as const)("rejects %s without allocating", async (_what, a, reason) => {
    const { service, net, journal } = await started({ missingNetns: ["/var/run/netns/gone"] });
    await rejectsWith(service.add(a), reason);
    expect(journal.addresses).toEqual([]);
    expect(net.callsOf("addVeth")).toEqual([]);
  });

  it("skips an address another writer recorded in the journal behind its back", async () => {
    const { service, journal } = await started();
    await journal.reserve(record("10.244.3.2", attachment("stranger"), 1n));
    expect(await podAddressOf(service.add(attachment("a1")))).toBe("10.244.3.3/24");
    expect(journal.find("10.244.3.2")?.attachment?.containerId).toBe("stranger");
    expect(journal.find("10.244.3.3")?.attachment?.containerId).toBe("a1");
  });

  it("a journal failure fails the add and leaves nothing behind", async () => {
    const { service, net, journal } = await started({ lease: smallLease });
    journal.failReserve = new TrellisError("INTERNAL", "could not record allocation");
    await rejectsWith(service.add(attachment("a1")), "INTERNAL");
    expect(service.allocations).toEqual([]);
    expect(net.callsOf("addVeth")).toEqual([]);
    journal.failReserve = undefined;
    await expect(service.add(attachment("a1"))).resolves.toBeDefined();
  });

  it("the same attachment added twice at once: one wins, the other is ALREADY_EXISTS", async () => {
    const { service, journal } = await started();
    const results = await Promise.allSettled([service.add(attachment("a1")), service.add(attachment("a1"))]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    expect((rejected?.reason as TrellisError).reason).toBe("ALREADY_EXISTS");
    expect(journal.addresses).toEqual(["10.244.3.2"]);
  });

  it("a pod interface name already taken in the netns fails the add and releases the address", async () => {
    const { service, net, journal } = await started();
    net.podInterfaces.set("/var/run/netns/a1", new Map([["eth0", "someone-else"]]));
    await rejectsWith(service.add(attachment("a1")), "ALREADY_EXISTS");
    expect(journal.addresses).toEqual([]);
    expect(service.allocations).toEqual([]);
  });

  it("100 concurrent adds all get distinct addresses inside the subnet", async () => {
    const { service, journal, net } = await started();
    const ids = Array.from({ length: 100 }, (_, i) => `pod${i}`);
    const results = await Promise.all(ids.map((id) => service.add(attachment(id))));
    const addresses = results.map((r) => r.ips[0]?.address ?? "");
    expect(new Set(addresses).size).toBe(100);
    for (const a of addresses) {
      const ip = parseIpv4(a.replace(/\/24$/, ""));
      expect(lease.subnet.contains(ip)).toBe(true);
      expect(a).not.toMatch(/^10\.244\.3\.(0|1|255)\//);
    }
    expect(journal.addresses).toHaveLength(100);
    expect(service.allocations).toHaveLength(100);
    expect(new Set(net.callsOf("addVeth").map((c) => c.veth.hostName)).size).toBe(100);
  });
});

describe("CniService.delete", () => {
  it("frees the address and deletes the veth; a later add does not reuse it at once", async () => {
    const { service, net, journal } = await started();
    await service.add(attachment("a1"));
    await service.add(attachment("a2"));
    await service.delete(attachment("a1"));
    expect(journal.addresses).toEqual(["10.244.3.3"]);
    expect(memoryAddresses(service)).toEqual(["10.244.3.3"]);
    expect(net.links.has(hostVethName("a1", "eth0"))).toBe(false);
    expect(net.links.has(hostVethName("a2", "eth0"))).toBe(true);
    expect(await podAddressOf(service.add(attachment("a3")))).toBe("10.244.3.4/24");
  });

  it("lets the same attachment be added again after it", async () => {
    const { service } = await started();
    await service.add(attachment("a1"));
    await service.delete(attachment("a1"));
    expect(await podAddressOf(service.add(attachment("a1")))).toBe("10.244.3.3/24");
  });

  it("of an unknown attachment succeeds and only tries its derived veth", async () => {
    const { service, net, journal } = await started();
    await expect(service.delete(attachment("never-added"))).resolves.toBeUndefined();
    expect(net.callsOf("deleteLink").map((c) => c.name)).toEqual([hostVethName("never-added", "eth0")]);
    expect(journal.addresses).toEqual([]);
  });

  it("twice succeeds", async () => {
    const { service, journal } = await started();
    await service.add(attachment("a1"));
    await service.delete(attachment("a1"));
    await service.delete(attachment("a1"));
    expect(journal.addresses).toEqual([]);
  });

  it("needs no netns (the pod may be gone)", async () => {
    const { service, journal } = await started({ missingNetns: ["/var/run/netns/a1"] });
    await service.add(create(AttachmentSchema, { ...attachment("a1"), netns: "/var/run/netns/other" }));
    await service.delete(create(AttachmentSchema, { ...attachment("a1"), netns: "" }));
    expect(journal.addresses).toEqual([]);
  });

  it("rejects a bad container id", async () => {
    const { service } = await started();
    await rejectsWith(service.delete(create(AttachmentSchema, { ...attachment("x"), containerId: "" })), "INVALID_ARGUMENT");
  });
});

describe("CniService.start reconciles the journal with the kernel", () => {
  const kept = attachment("kept");
  const gone = attachment("gone");
  const keptVeth: LinkInfo = { name: hostVethName("kept", "eth0"), kind: "veth", master: "trellis0" };
  const orphanOnBridge: LinkInfo = { name: hostVethName("orphan1", "eth0"), kind: "veth", master: "trellis0" };
  const orphanLoose: LinkInfo = { name: hostVethName("orphan2", "eth0"), kind: "veth" };
  const others: LinkInfo[] = [
    { name: "eth0", kind: "device" },
    { name: "lo" },
    { name: "trellis0", kind: "bridge" },
    { name: "vethabc123", kind: "veth", master: "trellis0" }, // not a Trellis name
    { name: hostVethName("docker", "eth0"), kind: "veth", master: "docker0" }, // on another bridge
    { name: hostVethName("dummy", "eth0"), kind: "dummy" }, // a Trellis-like name, not a veth
  ];

  async function reconciled() {
    return started({
      links: [keptVeth, orphanOnBridge, orphanLoose, ...others],
      records: [record("10.244.3.20", kept, 5n), record("10.244.3.21", gone, 6n)],
    });
  }

  it("releases records whose host veth is missing and keeps the others", async () => {
    const { service, journal } = await reconciled();
    expect(journal.addresses).toEqual(["10.244.3.20"]);
    expect(service.allocations.map((r) => [r.address, r.attachment?.containerId])).toEqual([["10.244.3.20", "kept"]]);
  });

  it("deletes veths no record explains and leaves every other link alone", async () => {
    const { net } = await reconciled();
    expect(net.callsOf("deleteLink").map((c) => c.name).sort()).toEqual([orphanOnBridge.name, orphanLoose.name].sort());
    expect([...net.links.keys()].sort()).toEqual([keptVeth.name, ...others.map((l) => l.name)].sort());
  });

  it("a restored attachment is ALREADY_EXISTS, and new addresses continue after the newest record", async () => {
    const { service } = await reconciled();
    await rejectsWith(service.add(kept), "ALREADY_EXISTS");
    expect(await podAddressOf(service.add(attachment("new")))).toBe("10.244.3.21/24");
  });

  it("continues after the newest record even when it is not the highest address", async () => {
    const a = attachment("a");
    const b = attachment("b");
    const { service } = await started({
      links: [
        { name: hostVethName("a", "eth0"), kind: "veth", master: "trellis0" },
        { name: hostVethName("b", "eth0"), kind: "veth", master: "trellis0" },
      ],
      records: [record("10.244.3.50", a, 1n), record("10.244.3.9", b, 2n)],
    });
    expect(await podAddressOf(service.add(attachment("c")))).toBe("10.244.3.10/24");
  });
});

describe("CniService when the subnet is full", () => {
  it("answers EXHAUSTED and keeps serving: a delete then an add works", async () => {
    const { service, journal } = await started({ lease: smallLease });
    for (const id of ["p1", "p2", "p3", "p4", "p5"]) await service.add(attachment(id));
    expect(journal.addresses).toEqual(["10.244.3.10", "10.244.3.11", "10.244.3.12", "10.244.3.13", "10.244.3.14"]);

    const err = await rejectsWith(service.add(attachment("p6")), "EXHAUSTED");
    expect(err.message).toContain("10.244.3.8/29 is full");
    expect(journal.addresses).toHaveLength(5);

    await service.delete(attachment("p3"));
    expect(await podAddressOf(service.add(attachment("p6")))).toBe("10.244.3.12/29");
    await rejectsWith(service.add(attachment("p7")), "EXHAUSTED");
  });
});
