import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { AttachmentService, type CniPhase, type NodeLease } from "../../../../node-daemon/cni/attachment-service.js";
import { hostVethName } from "../../../../node-daemon/net/names.js";
import type { LinkInfo } from "../../../../node-daemon/net/netlink.js";
import { Cidr, parseIpv4 } from "../../../../proto/core/cidr.js";
import { TrellisError } from "../../../../proto/core/errors.js";
import {
  type AllocationRecord,
  AllocationRecordSchema,
  type Attachment,
  AttachmentKeySchema,
  AttachmentSchema,
} from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";
import { MemoryAllocationJournal, MemoryAllocationMirror, MemoryPendingDeletes, RecordingNetlink } from "../../../support/fakes.js";
import { rejectsWith } from "../../expect-error.js";

const lease: NodeLease = { subnet: Cidr.parse("10.244.3.0/24"), bridgeName: "trellis0", mtu: 1450 };
const smallLease: NodeLease = { subnet: Cidr.parse("10.244.3.8/29"), bridgeName: "trellis0", mtu: 1450 };

const attachment = (containerId: string, ifName = "eth0"): Attachment =>
  create(AttachmentSchema, {
    networkName: "trellis",
    containerId,
    ifName,
    netns: `/var/run/netns/${containerId}`,
    podNamespace: "default",
    podName: `pod-${containerId}`,
  });

const record = (address: string, a: Attachment, createdAtMs: bigint): AllocationRecord =>
  create(AllocationRecordSchema, { address, attachment: a, hostVeth: hostVethName(a.containerId, a.ifName), createdAtMs });

interface Setup {
  service: AttachmentService;
  net: RecordingNetlink;
  journal: MemoryAllocationJournal;
}

interface SetupOptions {
  lease?: NodeLease;
  links?: LinkInfo[];
  records?: AllocationRecord[];
  missingNetns?: string[];
  mirror?: MemoryAllocationMirror;
  pendingDeletes?: MemoryPendingDeletes;
  metrics?: { observePhase(phase: CniPhase, seconds: number): void };
}

function unstarted(opts: SetupOptions = {}): Setup {
  const net = new RecordingNetlink(opts.links ?? []);
  const journal = new MemoryAllocationJournal(opts.records ?? []);
  let now = 1_000;
  const missing = new Set(opts.missingNetns ?? []);
  const service = new AttachmentService({
    net,
    journal,
    log: pino({ level: "silent" }),
    clock: () => now++,
    pathExists: async (path) => !missing.has(path),
    ...(opts.mirror ? { mirror: opts.mirror } : {}),
    ...(opts.pendingDeletes ? { pendingDeletes: opts.pendingDeletes } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  return { service, net, journal };
}

async function started(opts: SetupOptions = {}): Promise<Setup> {
  const setup = unstarted(opts);
  await setup.service.start(opts.lease ?? lease);
  return setup;
}

const vethOf = (containerId: string, ifName = "eth0"): LinkInfo => ({
  name: hostVethName(containerId, ifName),
  kind: "veth",
  master: "trellis0",
});

const podAddressOf = async (p: Promise<{ ips: Array<{ address: string }> }>) => (await p).ips[0]?.address;
const memoryAddresses = (s: AttachmentService) => s.allocations.map((r) => r.address).sort((a, b) => Number(parseIpv4(a) - parseIpv4(b)));

describe("AttachmentService.start", () => {
  it("is not ready before start and refuses ADD with UNAVAILABLE", async () => {
    const service = new AttachmentService({
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
    expect(net.callsOf("ensureBridge").map((c) => c.bridge)).toEqual([
      { name: "trellis0", mac: "0a:5a:0a:f4:03:01", address: "10.244.3.1/24", mtu: 1450 },
    ]);
    expect(net.forwarding).toBe(true);
    expect(net.links.get("trellis0")?.kind).toBe("bridge");
  });
});

describe("AttachmentService.add", () => {
  it("allocates .2, then .3, records them durably and creates the veths", async () => {
    const { service, net, journal } = await started();
    const first = await service.add(attachment("a1"));
    const second = await service.add(attachment("a2"));
    expect(first.ips[0]).toMatchObject({ address: "10.244.3.2/24", gateway: "10.244.3.1", interface: 2 });
    expect(second.ips[0]?.address).toBe("10.244.3.3/24");
    expect(journal.addresses).toEqual(["10.244.3.2", "10.244.3.3"]);
    expect(journal.find("10.244.3.2")).toMatchObject({
      hostVeth: hostVethName("a1", "eth0"),
      attachment: { containerId: "a1", ifName: "eth0" },
    });
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

  it("a journal failure fails the add and leaves nothing behind (the veth made meanwhile is undone)", async () => {
    const { service, net, journal } = await started({ lease: smallLease });
    journal.failReserve = new TrellisError("INTERNAL", "could not record allocation");
    await rejectsWith(service.add(attachment("a1")), "INTERNAL");
    expect(service.allocations).toEqual([]);
    expect([...net.links.values()].filter((l) => l.kind === "veth")).toEqual([]);
    journal.failReserve = undefined;
    await expect(service.add(attachment("a1"))).resolves.toBeDefined();
  });

  it("the same attachment added twice at once: one wins, the other is ALREADY_EXISTS", async () => {
    const { service, journal } = await started();
    const results = await Promise.allSettled([service.add(attachment("a1")), service.add(attachment("a1"))]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    expect((rejected?.reason as TrellisError | undefined)?.reason).toBe("ALREADY_EXISTS");
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

describe("AttachmentService.delete", () => {
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

describe("AttachmentService.start reconciles the journal with the kernel", () => {
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
    expect(
      net
        .callsOf("deleteLink")
        .map((c) => c.name)
        .sort(),
    ).toEqual([orphanOnBridge.name, orphanLoose.name].sort());
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

describe("AttachmentService when the subnet is full", () => {
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

describe("AttachmentService.check", () => {
  it("refuses with UNAVAILABLE before start", async () => {
    await rejectsWith(unstarted().service.check(attachment("a1")), "UNAVAILABLE");
  });

  it("passes for an attachment as ADD left it, and changes nothing", async () => {
    const { service, net, journal } = await started();
    await service.add(attachment("a1"));
    const callsBefore = net.calls.length;
    await expect(service.check(attachment("a1"))).resolves.toBeUndefined();
    expect(net.calls.length).toBe(callsBefore);
    expect(journal.addresses).toEqual(["10.244.3.2"]);
  });

  it.each([
    ["a container never added", attachment("never")],
    ["another interface of an added container", attachment("a1", "net1")],
    ["the same ids in another network", create(AttachmentSchema, { ...attachment("a1"), networkName: "other" })],
  ])("%s is NOT_FOUND", async (_what, a) => {
    const { service } = await started();
    await service.add(attachment("a1"));
    const err = await rejectsWith(service.check(a), "NOT_FOUND");
    expect(err.message).toContain(a.containerId);
  });

  it("a deleted attachment is NOT_FOUND", async () => {
    const { service } = await started();
    await service.add(attachment("a1"));
    await service.delete(attachment("a1"));
    await rejectsWith(service.check(attachment("a1")), "NOT_FOUND");
  });

  it.each([
    ["no netns", create(AttachmentSchema, { ...attachment("a1"), netns: "" })],
    ["a netns that does not exist", create(AttachmentSchema, { ...attachment("a1"), netns: "/var/run/netns/gone" })],
    ["a bad container id", create(AttachmentSchema, { ...attachment("a1"), containerId: "../a1" })],
  ])("rejects %s with INVALID_ARGUMENT", async (_what, a) => {
    const { service } = await started({ missingNetns: ["/var/run/netns/gone"] });
    await service.add(attachment("a1"));
    await rejectsWith(service.check(a), "INVALID_ARGUMENT");
  });

  const a1Veth = hostVethName("a1", "eth0");
  it.each<[string, (net: RecordingNetlink) => void, string]>([
    [
      "the pod interface is down",
      (net) => Object.assign(net.podConfig.get(a1Veth) ?? {}, { up: false }),
      "interface eth0 in /var/run/netns/a1 is down",
    ],
    ["the pod address is gone", (net) => Object.assign(net.podConfig.get(a1Veth) ?? {}, { addresses: [] }), "lacks address 10.244.3.2/24"],
    [
      "the default route is gone",
      (net) => Object.assign(net.podConfig.get(a1Veth) ?? {}, { defaultVia: undefined }),
      "no default route via 10.244.3.1 on eth0",
    ],
    [
      "the pod interface is gone",
      (net) => net.podInterfaces.get("/var/run/netns/a1")?.delete("eth0"),
      "interface eth0 is missing in /var/run/netns/a1",
    ],
    ["the host veth is gone", (net) => net.links.delete(a1Veth), `host interface ${a1Veth} is missing`],
    [
      "the host veth left the bridge",
      (net) => net.links.set(a1Veth, { name: a1Veth, kind: "veth", master: "docker0" }),
      `host interface ${a1Veth} is not a port of trellis0`,
    ],
  ])("%s: KERNEL naming it", async (_what, breakIt, problem) => {
    const { service, net } = await started();
    await service.add(attachment("a1"));
    await service.add(attachment("a2"));
    breakIt(net);
    const err = await rejectsWith(service.check(attachment("a1")), "KERNEL");
    expect(err.message).toContain("a1/eth0");
    expect(err.message).toContain(problem);
    await expect(service.check(attachment("a2"))).resolves.toBeUndefined(); // only the broken pod fails
  });

  it("names every difference in one error", async () => {
    const { service, net } = await started();
    await service.add(attachment("a1"));
    net.podConfig.set(a1Veth, { up: false, addresses: ["10.244.3.99/24"] });
    const err = await rejectsWith(service.check(attachment("a1")), "KERNEL");
    expect(err.message).toContain("is down");
    expect(err.message).toContain("lacks address 10.244.3.2/24");
    expect(err.message).toContain("no default route");
  });

  it("passes for an attachment restored from the journal at start", async () => {
    const { service, net } = await started({ links: [vethOf("kept")], records: [record("10.244.3.20", attachment("kept"), 1n)] });
    net.podInterfaces.set("/var/run/netns/kept", new Map([["eth0", hostVethName("kept", "eth0")]]));
    net.podConfig.set(hostVethName("kept", "eth0"), { up: true, addresses: ["10.244.3.20/24"], defaultVia: "10.244.3.1" });
    await expect(service.check(attachment("kept"))).resolves.toBeUndefined();
  });
});

describe("AttachmentService.gc", () => {
  const key = (containerId: string, ifName = "eth0") => create(AttachmentKeySchema, { containerId, ifName });
  const other = (containerId: string) => create(AttachmentSchema, { ...attachment(containerId), networkName: "other" });
  const ids = (as: readonly Attachment[]) => as.map((a) => `${a.networkName}/${a.containerId}/${a.ifName}`);

  async function withPods() {
    const setup = await started();
    for (const a of [attachment("a1"), attachment("a2"), attachment("a3"), other("b1")]) await setup.service.add(a);
    return setup; // a1 .2, a2 .3, a3 .4, b1 .5
  }

  it("refuses with UNAVAILABLE before start", async () => {
    await rejectsWith(unstarted().service.gc("trellis", []), "UNAVAILABLE");
  });

  it("releases the network's attachments that are not listed, returns them, and leaves other networks alone", async () => {
    const { service, net, journal } = await withPods();
    const released = await service.gc("trellis", [key("a1")]);
    expect(ids(released).sort()).toEqual(["trellis/a2/eth0", "trellis/a3/eth0"]);
    expect(journal.addresses).toEqual(["10.244.3.2", "10.244.3.5"]);
    expect(service.allocations.map((r) => r.attachment?.containerId).sort()).toEqual(["a1", "b1"]);
    expect(net.links.has(hostVethName("a2", "eth0"))).toBe(false);
    expect(net.links.has(hostVethName("a3", "eth0"))).toBe(false);
    expect(net.links.has(hostVethName("a1", "eth0"))).toBe(true);
    expect(net.links.has(hostVethName("b1", "eth0"))).toBe(true);
  });

  it("an empty list releases every attachment of the network, and only of it", async () => {
    const { service, journal } = await withPods();
    expect(ids(await service.gc("other", [])).sort()).toEqual(["other/b1/eth0"]);
    expect(journal.addresses).toEqual(["10.244.3.2", "10.244.3.3", "10.244.3.4"]);
  });

  it("matches container id and interface name together", async () => {
    const { service, journal } = await started();
    await service.add(attachment("a1", "eth0"));
    await service.add(attachment("a1", "net1"));
    expect(ids(await service.gc("trellis", [key("a1", "eth0"), key("a1", "net2")]))).toEqual(["trellis/a1/net1"]);
    expect(journal.addresses).toEqual(["10.244.3.2"]);
  });

  it.each([
    ["every attachment listed", ["a1", "a2", "a3"]],
    ["unknown keys listed too", ["a1", "a2", "a3", "zz", "yy"]],
  ])("%s: releases nothing and touches no link", async (_what, valid) => {
    const { service, net, journal } = await withPods();
    const deletesBefore = net.callsOf("deleteLink").length;
    expect(
      await service.gc(
        "trellis",
        valid.map((id) => key(id)),
      ),
    ).toEqual([]);
    expect(net.callsOf("deleteLink").length).toBe(deletesBefore);
    expect(journal.addresses).toHaveLength(4);
  });

  it("of a network without attachments releases nothing", async () => {
    const { service, journal } = await withPods();
    expect(await service.gc("nope", [])).toEqual([]);
    expect(journal.addresses).toHaveLength(4);
  });

  it("twice: the second run has nothing left to release", async () => {
    const { service } = await withPods();
    expect(await service.gc("trellis", [])).toHaveLength(3);
    expect(await service.gc("trellis", [])).toEqual([]);
  });

  it("a failure is KERNEL naming the attachment, after releasing every other one; a later run finishes", async () => {
    const { service, net, journal } = await withPods();
    net.failDeleteLink.set(hostVethName("a2", "eth0"), new TrellisError("KERNEL", "ip link del failed: device busy"));
    const err = await rejectsWith(service.gc("trellis", []), "KERNEL");
    expect(err.message).toContain("a2/eth0");
    expect(err.message).toContain("10.244.3.3");
    expect(err.message).toContain("device busy");
    expect(err.message).not.toContain("a3");
    expect(journal.addresses).toEqual(["10.244.3.3", "10.244.3.5"]); // a1 and a3 released, a2 kept for the next run
    expect(net.links.has(hostVethName("a3", "eth0"))).toBe(false);

    net.failDeleteLink.clear();
    expect(ids(await service.gc("trellis", []))).toEqual(["trellis/a2/eth0"]);
    expect(journal.addresses).toEqual(["10.244.3.5"]);
  });

  it("a released address can be handed out again", async () => {
    const { service } = await started({ lease: smallLease });
    for (const id of ["p1", "p2", "p3", "p4", "p5"]) await service.add(attachment(id));
    await rejectsWith(service.add(attachment("p6")), "EXHAUSTED");
    await service.gc(
      "trellis",
      ["p1", "p2", "p4", "p5"].map((id) => key(id)),
    );
    expect(await podAddressOf(service.add(attachment("p6")))).toBe("10.244.3.12/29");
  });
});

describe("AttachmentService.completePendingDeletes", () => {
  const a1 = attachment("a1");

  it("does nothing without a pending-deletes store", async () => {
    const { service, journal } = await started({ links: [vethOf("a1")], records: [record("10.244.3.5", a1, 1n)] });
    await expect(service.completePendingDeletes()).resolves.toBeUndefined();
    expect(journal.addresses).toEqual(["10.244.3.5"]);
  });

  it("start completes the DELs the shim left while the daemon was down, and removes them", async () => {
    const pendingDeletes = new MemoryPendingDeletes([{ id: "a1.json", attachment: a1 }]);
    const { service, net, journal } = await started({
      links: [vethOf("a1"), vethOf("a2")],
      records: [record("10.244.3.5", a1, 1n), record("10.244.3.6", attachment("a2"), 2n)],
      pendingDeletes,
    });
    expect(journal.addresses).toEqual(["10.244.3.6"]);
    expect(service.allocations.map((r) => r.address)).toEqual(["10.244.3.6"]);
    expect(net.links.has(hostVethName("a1", "eth0"))).toBe(false);
    expect(net.links.has(hostVethName("a2", "eth0"))).toBe(true);
    expect(pendingDeletes.ids).toEqual([]);
    expect(pendingDeletes.removed).toEqual(["a1.json"]);
  });

  it.each<[string, MemoryPendingDeletes]>([
    ["an attachment already gone", new MemoryPendingDeletes([{ id: "gone.json", attachment: attachment("gone") }])],
    ["an undecodable entry", new MemoryPendingDeletes([{ id: "garbage.json" }])],
    [
      "the same DEL twice",
      new MemoryPendingDeletes([
        { id: "one.json", attachment: a1 },
        { id: "two.json", attachment: a1 },
      ]),
    ],
  ])("%s: removed, and start succeeds", async (_what, pendingDeletes) => {
    const { service } = await started({ pendingDeletes });
    expect(service.ready).toBe(true);
    expect(pendingDeletes.ids).toEqual([]);
  });

  it("an undecodable entry is skipped: the entries after it are still completed", async () => {
    const pendingDeletes = new MemoryPendingDeletes([{ id: "1-garbage.json" }, { id: "2-a1.json", attachment: a1 }]);
    const { journal, net } = await started({ links: [vethOf("a1")], records: [record("10.244.3.5", a1, 1n)], pendingDeletes });
    expect(pendingDeletes.removed.sort()).toEqual(["1-garbage.json", "2-a1.json"]);
    expect(journal.addresses).toEqual([]);
    expect(net.callsOf("deleteLink").map((c) => c.name)).toEqual([hostVethName("a1", "eth0")]); // garbage deleted nothing
  });

  it("completes DELs left while serving, on the next call", async () => {
    const pendingDeletes = new MemoryPendingDeletes();
    const { service, journal } = await started({ pendingDeletes });
    await service.add(a1);
    await service.add(attachment("a2"));
    pendingDeletes.entries.set("late.json", a1);
    await service.completePendingDeletes();
    expect(journal.addresses).toEqual(["10.244.3.3"]);
    expect(pendingDeletes.ids).toEqual([]);
  });

  it("a DEL that fails keeps its entry for the next round", async () => {
    const pendingDeletes = new MemoryPendingDeletes();
    const { service, net, journal } = await started({ pendingDeletes });
    await service.add(a1);
    pendingDeletes.entries.set("a1.json", a1);
    net.failDeleteLink.set(hostVethName("a1", "eth0"), new TrellisError("KERNEL", "ip link del failed"));
    await service.completePendingDeletes(); // logged, not thrown: the other entries still get their turn
    expect(pendingDeletes.ids).toEqual(["a1.json"]);
    expect(journal.addresses).toEqual(["10.244.3.2"]);

    net.failDeleteLink.clear();
    await service.completePendingDeletes();
    expect(pendingDeletes.ids).toEqual([]);
    expect(journal.addresses).toEqual([]);
  });
});

describe("AttachmentService.start undoes an ADD interrupted by a crash", () => {
  it.each<[string, (net: RecordingNetlink, hostVeth: string) => void]>([
    ["the pod interface never got its address", (net, v) => net.podConfig.set(v, { up: false, addresses: [] })],
    ["the host end never joined the bridge", (net, v) => net.links.set(v, { name: v, kind: "veth" })],
  ])("%s: veth deleted, address released", async (_what, breakIt) => {
    const a1 = attachment("a1");
    const a2 = attachment("a2");
    const net0 = [vethOf("a1"), vethOf("a2")];
    const setup = unstarted({ links: net0, records: [record("10.244.3.7", a1, 1n), record("10.244.3.8", a2, 2n)] });
    breakIt(setup.net, hostVethName("a1", "eth0"));
    await setup.service.start(lease);
    expect(setup.journal.addresses).toEqual(["10.244.3.8"]);
    expect(setup.net.links.has(hostVethName("a1", "eth0"))).toBe(false);
    expect(setup.net.links.has(hostVethName("a2", "eth0"))).toBe(true);
  });

  it("a finished pod whose default route was removed by hand is kept (drift is for CHECK to report)", async () => {
    const a1 = attachment("a1");
    const setup = unstarted({ links: [vethOf("a1")], records: [record("10.244.3.7", a1, 1n)] });
    setup.net.podConfig.set(hostVethName("a1", "eth0"), { up: true, addresses: ["10.244.3.7/24"] });
    await setup.service.start(lease);
    expect(setup.journal.addresses).toEqual(["10.244.3.7"]);
  });
});

describe("AttachmentService.start with pending deletes that fail", () => {
  it("an invalid request is dropped and a failing one is kept for later; start still succeeds", async () => {
    const a1 = attachment("a1");
    const pendingDeletes = new MemoryPendingDeletes([
      { id: "1-invalid.json", attachment: create(AttachmentSchema, { networkName: "trellis" }) },
      { id: "2-a1.json", attachment: a1 },
    ]);
    const setup = unstarted({ pendingDeletes, links: [vethOf("a1")], records: [record("10.244.3.7", a1, 1n)] });
    setup.net.failDeleteLink.set(hostVethName("a1", "eth0"), new TrellisError("KERNEL", "device busy"));
    await setup.service.start(lease);
    expect(setup.service.ready).toBe(true);
    expect(pendingDeletes.ids).toEqual(["2-a1.json"]); // the invalid one is gone, the failed one waits
    setup.net.failDeleteLink.clear();
    await setup.service.completePendingDeletes();
    expect(pendingDeletes.ids).toEqual([]);
    expect(setup.journal.addresses).toEqual([]);
  });
});

describe("AttachmentService with an allocation mirror", () => {
  it("add records the allocation in the mirror, delete releases it", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service } = await started({ mirror });
    await service.add(attachment("a1"));
    await service.add(attachment("a2"));
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual(["10.244.3.2", "10.244.3.3"]);
    expect(mirror.find("10.244.3.2")).toMatchObject({
      hostVeth: hostVethName("a1", "eth0"),
      attachment: { containerId: "a1", ifName: "eth0" },
    });

    await service.delete(attachment("a1"));
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual(["10.244.3.3"]);
  });

  it("gc releases in the mirror too", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service } = await started({ mirror });
    await service.add(attachment("a1"));
    await service.add(attachment("a2"));
    await service.gc("trellis", [create(AttachmentKeySchema, { containerId: "a2", ifName: "eth0" })]);
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual(["10.244.3.3"]);
  });

  it("a failing mirror fails neither add nor delete; syncMirror repairs it later", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service, journal } = await started({ mirror });
    mirror.failWrites = new TrellisError("UNAVAILABLE", "control plane unreachable");
    await service.add(attachment("a1"));
    await service.add(attachment("a2"));
    await service.delete(attachment("a2"));
    await service.mirrorIdle();
    await mirror.settled();
    expect(journal.addresses).toEqual(["10.244.3.2"]);
    expect(mirror.addresses).toEqual([]);

    mirror.failWrites = undefined;
    await service.syncMirror();
    expect(mirror.addresses).toEqual(["10.244.3.2"]);
  });

  it("a failed add mirrors nothing that stays", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service, net } = await started({ mirror });
    net.failAddVeth = new TrellisError("KERNEL", "ip link add failed");
    await rejectsWith(service.add(attachment("a1")), "KERNEL");
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual([]);
  });

  it("syncMirror makes the mirror equal to the journal: records what it lacks, corrects, releases extras", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service, journal } = await started({ mirror });
    await service.add(attachment("a1")); // .2
    await service.add(attachment("a2")); // .3
    await service.add(attachment("a3")); // .4
    await service.mirrorIdle();
    await mirror.settled();
    // The control plane's copy drifts: .2 lost, .3 says another veth, .9 is unknown to the node.
    await mirror.release("10.244.3.2");
    await mirror.record(record("10.244.3.3", attachment("someone"), 1n));
    await mirror.record(record("10.244.3.9", attachment("ghost"), 1n));
    const callsBefore = mirror.calls.length;

    await service.syncMirror();
    expect(mirror.addresses).toEqual(journal.addresses);
    expect(mirror.find("10.244.3.3")?.attachment?.containerId).toBe("a2");
    // .4 was right: only the differences are written, in one call.
    expect(mirror.calls.slice(callsBefore).filter((c) => c.method !== "list")).toEqual([
      { method: "sync", recorded: ["10.244.3.2", "10.244.3.3"], released: ["10.244.3.9"] },
    ]);
  });

  it("syncMirror with an unreachable control plane neither throws nor writes; the next one catches up", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service } = await started({ mirror });
    await service.add(attachment("a1"));
    await service.mirrorIdle();
    await mirror.settled();
    await mirror.release("10.244.3.2"); // the copy drifted
    mirror.failList = new TrellisError("UNAVAILABLE", "control plane unreachable");
    const callsBefore = mirror.calls.length;
    await expect(service.syncMirror()).resolves.toBeUndefined();
    expect(mirror.calls.slice(callsBefore)).toEqual([{ method: "list" }]);
    expect(mirror.addresses).toEqual([]);

    mirror.failList = undefined;
    await service.syncMirror();
    expect(mirror.addresses).toEqual(["10.244.3.2"]);
  });

  it("syncMirror without a mirror does nothing", async () => {
    const { service, journal } = await started();
    await service.add(attachment("a1"));
    await expect(service.syncMirror()).resolves.toBeUndefined();
    expect(journal.addresses).toEqual(["10.244.3.2"]);
  });

  it("start ends with the mirror equal to the journal", async () => {
    const kept = attachment("kept");
    const mirror = new MemoryAllocationMirror([record("10.244.3.40", attachment("ghost"), 1n)]);
    const { service, journal } = await started({ mirror, links: [vethOf("kept")], records: [record("10.244.3.20", kept, 5n)] });
    await service.mirrorIdle();
    await mirror.settled();
    expect(journal.addresses).toEqual(["10.244.3.20"]);
    expect(mirror.addresses).toEqual(["10.244.3.20"]);
  });
});

describe("AttachmentService.start restores allocations from the mirror (a node whose state dir was lost)", () => {
  const a1 = attachment("a1");
  const a2 = attachment("a2");

  it("restores records the journal lacks whose host veth exists, and not the others", async () => {
    const mirror = new MemoryAllocationMirror([record("10.244.3.30", a1, 7n), record("10.244.3.31", a2, 8n)]);
    const { service, net, journal } = await started({ mirror, links: [vethOf("a1")] }); // a2's veth is gone
    expect(journal.addresses).toEqual(["10.244.3.30"]);
    expect(journal.find("10.244.3.30")).toMatchObject({ hostVeth: hostVethName("a1", "eth0"), attachment: { containerId: "a1" } });
    expect(service.allocations.map((r) => r.address)).toEqual(["10.244.3.30"]);
    expect(net.links.has(hostVethName("a1", "eth0"))).toBe(true); // explained now: not deleted as an orphan
    expect(net.callsOf("deleteLink")).toEqual([]);
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual(["10.244.3.30"]);
  });

  it("a restored attachment behaves like a local one: ALREADY_EXISTS, addresses continue after it, DEL releases it", async () => {
    const mirror = new MemoryAllocationMirror([record("10.244.3.30", a1, 7n)]);
    const { service, journal } = await started({ mirror, links: [vethOf("a1")] });
    await rejectsWith(service.add(a1), "ALREADY_EXISTS");
    expect(await podAddressOf(service.add(attachment("new")))).toBe("10.244.3.31/24");
    await service.delete(a1);
    expect(journal.addresses).toEqual(["10.244.3.31"]);
  });

  it("the local journal wins over the mirror for the same address", async () => {
    const mirror = new MemoryAllocationMirror([record("10.244.3.30", a2, 9n)]);
    const { service, net, journal } = await started({
      mirror,
      links: [vethOf("a1"), vethOf("a2")],
      records: [record("10.244.3.30", a1, 1n)],
    });
    expect(journal.find("10.244.3.30")?.attachment?.containerId).toBe("a1");
    expect(service.allocations.map((r) => r.attachment?.containerId)).toEqual(["a1"]);
    expect(net.links.has(hostVethName("a2", "eth0"))).toBe(false); // nothing local explains it
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.find("10.244.3.30")?.attachment?.containerId).toBe("a1");
  });

  it("a stale mirror record of an attachment the journal holds at another address is not restored", async () => {
    // a release that the control plane never saw: the mirror still has a1 at .30; the journal has a1 at .5
    const mirror = new MemoryAllocationMirror([record("10.244.3.30", a1, 9n)]);
    const { service, journal } = await started({ mirror, links: [vethOf("a1")], records: [record("10.244.3.5", a1, 1n)] });
    expect(journal.addresses).toEqual(["10.244.3.5"]);
    expect(service.allocations.map((r) => r.address)).toEqual(["10.244.3.5"]);
    await service.mirrorIdle();
    await mirror.settled();
    expect(mirror.addresses).toEqual(["10.244.3.5"]); // the sync after start repairs the mirror
  });

  it("an unreachable mirror: start uses the local journal only", async () => {
    const mirror = new MemoryAllocationMirror([record("10.244.3.30", a1, 7n)]);
    mirror.failList = new TrellisError("UNAVAILABLE", "control plane unreachable");
    const { service, journal, net } = await started({
      mirror,
      links: [vethOf("a1"), vethOf("a2")],
      records: [record("10.244.3.31", a2, 1n)],
    });
    expect(service.ready).toBe(true);
    expect(journal.addresses).toEqual(["10.244.3.31"]);
    expect(net.links.has(hostVethName("a1", "eth0"))).toBe(false); // unexplained without the mirror
  });
});

describe("AttachmentService.moveTo (the node got another subnet after losing its lease)", () => {
  it("new pods get the new subnet, the bridge gets its gateway, and the old pods are reported stranded until deleted", async () => {
    const { service, net } = await started();
    await service.add(attachment("old-1"));
    await service.add(attachment("old-2"));
    expect(service.strandedAllocations).toEqual([]);
    await service.moveTo({ subnet: Cidr.parse("10.244.9.0/24"), bridgeName: "trellis0", mtu: 1450 });
    expect(net.callsOf("ensureBridge").at(-1)?.bridge.address).toBe("10.244.9.1/24");
    expect(await podAddressOf(service.add(attachment("new")))).toBe("10.244.9.2/24");
    expect(service.strandedAllocations.map((r) => r.attachment?.containerId).sort()).toEqual(["old-1", "old-2"]);
    await service.delete(attachment("old-1"));
    await service.delete(attachment("old-2"));
    expect(service.strandedAllocations).toEqual([]);
  });

  it("the mirror keeps syncing after the move: pods stranded on the old subnet are not sent (the control plane refuses them)", async () => {
    const mirror = new MemoryAllocationMirror();
    const { service } = await started({ mirror });
    const old = await podAddressOf(service.add(attachment("old-1")));
    await service.syncMirror();
    await mirror.settled();
    // The control plane dropped the node's old allocations with its old lease.
    await mirror.release(old?.split("/")[0] ?? "");
    const before = mirror.calls.length;
    await service.moveTo({ subnet: Cidr.parse("10.244.9.0/24"), bridgeName: "trellis0", mtu: 1450 });
    mirror.subnet = Cidr.parse("10.244.9.0/24");
    await service.add(attachment("new"));
    await mirror.settled();
    await service.syncMirror();
    await service.syncMirror();
    expect(mirror.addresses).toContain("10.244.9.2");
    const refused = mirror.calls.slice(before).filter((c) => c.method === "sync" && c.recorded.some((a) => a.startsWith("10.244.3.")));
    expect(refused).toEqual([]);
  });
});

describe("AttachmentService metrics (trellis_cni_phase_duration_seconds, trellis_pod_addresses_in_use)", () => {
  /** Phases observed, in order, with every duration checked to be a real one. */
  function phases() {
    const seen: CniPhase[] = [];
    const metrics = {
      observePhase(phase: CniPhase, seconds: number) {
        expect(seconds).toBeGreaterThanOrEqual(0);
        expect(seconds).toBeLessThan(5);
        seen.push(phase);
      },
    };
    return { seen, metrics };
  }

  it("ADD times choosing the address, recording it and the veth; DEL the veth and the release; CHECK the inspection", async () => {
    const { seen, metrics } = phases();
    const { service } = await started({ metrics });
    seen.length = 0; // start's own work is not a pod call
    await service.add(attachment("a1"));
    expect([...seen].sort()).toEqual(["allocation", "fsync", "kernel"]);
    expect(service.allocationCount).toBe(1);
    seen.length = 0;
    await service.check(attachment("a1"));
    expect(seen).toEqual(["kernel"]);
    seen.length = 0;
    await service.delete(attachment("a1"));
    expect(seen).toEqual(["kernel", "fsync"]);
    expect(service.allocationCount).toBe(0);
  });

  it("a failed step is timed too: a refused veth costs its kernel time, and the address's record and release", async () => {
    const { seen, metrics } = phases();
    const { service, net } = await started({ metrics });
    seen.length = 0;
    net.failAddVeth = new TrellisError("KERNEL", "ip link add failed");
    await expect(service.add(attachment("a1"))).rejects.toThrow("ip link add failed");
    expect([...seen].sort()).toEqual(["allocation", "fsync", "fsync", "kernel"]);
    expect(service.allocationCount).toBe(0);
  });

  it("counts every allocation restored at start", async () => {
    const a1 = attachment("a1");
    const a2 = attachment("a2");
    const { service } = await started({
      links: [vethOf("a1"), vethOf("a2")],
      records: [record("10.244.3.5", a1, 1n), record("10.244.3.6", a2, 2n)],
    });
    expect(service.allocationCount).toBe(2);
  });
});
