import {
  clone,
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  type Message,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { syncAllocationsLimit } from "../../../control-plane/allocations/allocation-mirror.js";
import { methodKey, requestLimits, requestValidation, requestValidators, validateRequest } from "../../../control-plane/rpc/validate.js";
import { mirrorBatchLimit } from "../../../node-daemon/cni/mirror-queue.js";
import { Health } from "../../../proto/gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../../../proto/gen/trellis/admin/v1/admin_pb.js";
import { AllocationRecordSchema } from "../../../proto/gen/trellis/cni/v1/cni_pb.js";
import {
  JoinService,
  NodeService,
  RegisterNodeResponseSchema,
  WatchRoutesResponseSchema,
} from "../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { serverInterceptor } from "../../../proto/rpc/interceptor.js";
import { trellisErrorOf } from "../expect-error.js";

const services: readonly DescService[] = [NodeService, AdminService, JoinService];
const N = NodeService.method;
const A = AdminService.method;

const record = (over: Omit<MessageInitShape<typeof AllocationRecordSchema>, "$typeName"> = {}) =>
  create(AllocationRecordSchema, {
    address: "10.244.1.5",
    attachment: {
      networkName: "trellis",
      containerId: "c0ffee42",
      ifName: "eth0",
      netns: "/var/run/netns/cni-1234",
      podNamespace: "default",
      podName: "web-0",
      podUid: "8c6b1f0e-3f4c-4b43-9e7a-2d2f5a6f0b11",
    },
    hostVeth: "tr0123456789a",
    createdAtMs: 1_700_000_000_000n,
    ...over,
  });
const csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
const node = { nodeName: "node-1" };

/** A valid request of `method` (fields are the generated init shape of its input). */
const req = (method: DescMethod, init: Record<string, unknown> = {}): [DescMethod, Message] => [
  method,
  create(method.input as DescMessage, init as never),
];

/** One valid request of every method, with every field set that the method has. */
const valid: Array<[DescMethod, Message]> = [
  req(N.registerNode, { ...node, nodeIp: "192.168.1.11", mtu: 1500, router: false }),
  req(N.heartbeat, node),
  req(N.deregisterNode, node),
  req(N.watchRoutes, { ...node, fromRevision: 42n }),
  req(N.recordAllocation, { ...node, allocation: record() }),
  req(N.releaseAllocation, { ...node, address: "10.244.1.5" }),
  req(N.syncAllocations, { ...node, recorded: [record()], released: ["10.244.1.6"] }),
  req(N.listNodeAllocations, node),
  req(N.reportRoutes, { ...node, revision: 7n, routes: [{ nodeName: "node-2", subnet: "10.244.2.0/24", nodeIp: "192.168.1.12" }] }),
  req(N.renewCertificate, { ...node, csrPem: csr }),
  req(JoinService.method.join, { token: "abcdef.0123456789abcdef", ...node, csrPem: csr }),
  req(A.listNodes),
  req(A.getNode, { name: "node-1" }),
  req(A.listLeases),
  req(A.listReservations),
  req(A.listAllocations, node),
  req(A.lookupAddress, { address: "10.244.1.5" }),
  req(A.getRoutes, node),
  req(A.getClusterConfig),
  req(A.createJoinToken, { ...node, ttlSeconds: 600n }),
  req(A.setRouter, { ...node, router: true }),
  req(A.drainNode, { name: "node-1" }),
  req(A.evictNode, { name: "node-1" }),
  req(A.releaseLease, { subnet: "10.244.1.0/24" }),
  req(A.reserveSubnet, { subnet: "10.244.1.0/24", ...node }),
  req(A.deleteReservation, { subnet: "10.244.1.0/24" }),
  req(A.watchEvents),
];

const rejection = (method: DescMethod, message: Message) => {
  const err = trellisErrorOf(() => validateRequest(method, message));
  expect(err.reason).toBe("INVALID_ARGUMENT");
  return err.message;
};

describe("the request validator table", () => {
  it("has a validator for every method of NodeService, AdminService and JoinService", () => {
    const missing = services.flatMap((s) => s.methods.filter((m) => !requestValidators.has(methodKey(m))).map(methodKey));
    expect(missing, `methods without a request validator in control-plane/rpc/validate.ts: ${missing.join(", ")}`).toEqual([]);
  });

  it("has a valid example in this test for every method", () => {
    const covered = new Set(valid.map(([m]) => methodKey(m)));
    const missing = services.flatMap((s) => s.methods.map(methodKey).filter((k) => !covered.has(k)));
    expect(missing, `add a valid request to this test for: ${missing.join(", ")}`).toEqual([]);
  });

  it("names methods as <service type name>/<Method>", () => {
    expect(methodKey(N.registerNode)).toBe("trellis.controlplane.v1.NodeService/RegisterNode");
    expect([...requestValidators.keys()]).toContain("trellis.admin.v1.AdminService/CreateJoinToken");
  });

  it("refuses a method of a validated service that has no validator (INTERNAL, never served unchecked)", () => {
    const unknown = { ...N.heartbeat, name: "Unvalidated" } as DescMethod;
    const err = trellisErrorOf(() => validateRequest(unknown, create(N.heartbeat.input, node)));
    expect(err.reason).toBe("INTERNAL");
    expect(err.message).toBe("no request validator for trellis.controlplane.v1.NodeService/Unvalidated");
  });

  it("lets other services' calls (health, reflection) through", () => {
    expect(() => validateRequest(Health.method.check, create(Health.method.check.input, { service: "x".repeat(5000) }))).not.toThrow();
  });
});

describe("every validator accepts valid requests", () => {
  it.each(valid.map(([m, msg]) => [methodKey(m), m, msg] as const))("%s", (_key, method, message) => {
    expect(() => validateRequest(method, message)).not.toThrow();
  });

  const ok: Array<[string, DescMethod, Record<string, unknown>]> = [
    ["mtu 0 (the default)", N.registerNode, { ...node, nodeIp: "10.0.0.1", mtu: 0 }],
    ["mtu 576", N.registerNode, { ...node, nodeIp: "10.0.0.1", mtu: 576 }],
    ["mtu 65535", N.registerNode, { ...node, nodeIp: "10.0.0.1", mtu: 65535 }],
    ["a 253-character node name", N.heartbeat, { nodeName: `${"a".repeat(252)}z` }],
    ["from_revision 0 (a snapshot)", N.watchRoutes, { ...node, fromRevision: 0n }],
    [
      "an allocation without pod metadata or netns",
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth0" } }) },
    ],
    [
      `${syncAllocationsLimit} recorded and ${syncAllocationsLimit} released`,
      N.syncAllocations,
      { ...node, recorded: Array(syncAllocationsLimit).fill(record()), released: Array(syncAllocationsLimit).fill("10.244.1.9") },
    ],
    ["an empty sync", N.syncAllocations, node],
    [
      "the central router's cluster route",
      N.reportRoutes,
      { ...node, routes: [{ nodeName: "router", subnet: "10.244.0.0/16", nodeIp: "192.168.1.1", router: true }] },
    ],
    ["no routes", N.reportRoutes, node],
    ["every node's allocations", A.listAllocations, {}],
    ["ttl_seconds 0 (the default)", A.createJoinToken, { ...node, ttlSeconds: 0n }],
    ["ttl_seconds 60", A.createJoinToken, { ...node, ttlSeconds: 60n }],
    ["ttl_seconds 86400", A.createJoinToken, { ...node, ttlSeconds: 86_400n }],
    ["a /30 subnet", A.reserveSubnet, { ...node, subnet: "10.244.1.4/30" }],
    ["a 16 KiB csr_pem", N.renewCertificate, { ...node, csrPem: "x".repeat(16 * 1024) }],
  ];
  it.each(ok)("%s", (_what, method, init) => {
    expect(() => validateRequest(method, create(method.input as DescMessage, init as never))).not.toThrow();
  });
});

describe("every bad field is rejected with INVALID_ARGUMENT naming it, what is wrong and what is allowed", () => {
  const long = (n: number) => "a".repeat(n);
  const bad: Array<[DescMethod, Record<string, unknown>, RegExp]> = [
    [N.registerNode, { nodeName: "Node_1", nodeIp: "10.0.0.1" }, /^node_name "Node_1" is not a valid node name \(lowercase letters/],
    [N.registerNode, { nodeName: "", nodeIp: "10.0.0.1" }, /^node_name is required$/],
    [N.registerNode, { nodeName: long(254), nodeIp: "10.0.0.1" }, /^node_name is 254 characters long; at most 253 are allowed$/],
    [N.registerNode, { ...node, nodeIp: "192.168.1" }, /^node_ip "192.168.1" is not an IPv4 address$/],
    [N.registerNode, { ...node, nodeIp: "" }, /^node_ip is required$/],
    [
      N.registerNode,
      { ...node, nodeIp: "0.0.0.0" },
      /^node_ip 0.0.0.0 is not a unicast address; a node IP is not in 0.0.0.0\/8, 224.0.0.0\/4/,
    ],
    [N.registerNode, { ...node, nodeIp: "224.0.0.1" }, /^node_ip 224.0.0.1 is not a unicast address/],
    [N.registerNode, { ...node, nodeIp: "255.255.255.255" }, /^node_ip 255.255.255.255 is not a unicast address/],
    [N.registerNode, { ...node, nodeIp: "10.0.0.1", mtu: 575 }, /^mtu 575 is not between 576 and 65535$/],
    [N.registerNode, { ...node, nodeIp: "10.0.0.1", mtu: 65536 }, /^mtu 65536 is not between 576 and 65535$/],
    [N.heartbeat, { nodeName: "-node" }, /^node_name "-node" is not a valid node name/],
    [N.deregisterNode, { nodeName: "node 1" }, /^node_name "node 1" is not a valid node name/],
    [N.listNodeAllocations, { nodeName: "" }, /^node_name is required$/],
    [N.watchRoutes, { ...node, fromRevision: -1n }, /^from_revision -1 is negative; 0 or more is allowed$/],
    [N.recordAllocation, node, /^allocation is required$/],
    [
      N.recordAllocation,
      { ...node, allocation: record({ address: "10.244.1.500" }) },
      /^allocation.address "10.244.1.500" is not an IPv4 address$/,
    ],
    [N.recordAllocation, { ...node, allocation: record({ attachment: undefined }) }, /^allocation.attachment is required$/],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "", ifName: "eth0" } }) },
      /^allocation.attachment.container_id is required$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "-c0ffee", ifName: "eth0" } }) },
      /^allocation.attachment.container_id "-c0ffee" must start with a letter or digit and hold only letters, digits/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: long(257), ifName: "eth0" } }) },
      /^allocation.attachment.container_id is 257 characters long; at most 256 are allowed$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth/0" } }) },
      /^allocation.attachment.if_name "eth\/0" may not contain '\/', ':' or whitespace$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "" } }) },
      /^allocation.attachment.if_name "" is empty$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth0-is-too-long" } }) },
      /^allocation.attachment.if_name is 16 characters long; at most 15 are allowed$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "éééééééé" } }) },
      /^allocation.attachment.if_name "éééééééé" is 16 bytes long; Linux allows at most 15 bytes$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth0", podNamespace: long(254) } }) },
      /^allocation.attachment.pod_namespace is 254 characters long; at most 253 are allowed$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth0", podName: long(254) } }) },
      /^allocation.attachment.pod_name is 254 characters long; at most 253 are allowed$/,
    ],
    [
      N.recordAllocation,
      { ...node, allocation: record({ attachment: { containerId: "c", ifName: "eth0", netns: long(4097) } }) },
      /^allocation.attachment.netns is 4097 characters long; at most 4096 are allowed$/,
    ],
    [N.recordAllocation, { ...node, allocation: record({ hostVeth: "" }) }, /^allocation.host_veth "" is empty$/],
    [N.recordAllocation, { ...node, allocation: record({ hostVeth: "tr:1" }) }, /^allocation.host_veth "tr:1" may not contain/],
    [
      N.recordAllocation,
      { ...node, allocation: record({ createdAtMs: -5n }) },
      /^allocation.created_at_ms -5 is negative; 0 or more is allowed$/,
    ],
    [N.releaseAllocation, { ...node, address: "10.244.1.5/32" }, /^address "10.244.1.5\/32" is not an IPv4 address$/],
    [
      N.syncAllocations,
      { ...node, recorded: Array(syncAllocationsLimit + 1).fill(record()) },
      /^recorded holds 1001 entries; at most 1000 recorded and 1000 released allocations per call, split the batch$/,
    ],
    [
      N.syncAllocations,
      { ...node, released: Array(syncAllocationsLimit + 1).fill("10.244.1.5") },
      /^released holds 1001 entries; at most 1000/,
    ],
    [
      N.syncAllocations,
      { ...node, recorded: [record(), record({ attachment: { containerId: "c", ifName: "a b" } })] },
      /^recorded\[1\].attachment.if_name "a b" may not contain/,
    ],
    [N.syncAllocations, { ...node, released: ["10.244.1.5", "nope"] }, /^released\[1\] "nope" is not an IPv4 address$/],
    [N.reportRoutes, { ...node, revision: -1n }, /^revision -1 is negative/],
    [
      N.reportRoutes,
      { ...node, routes: Array(requestLimits.reportedRoutes + 1).fill({ nodeName: "n", subnet: "10.244.2.0/24", nodeIp: "10.0.0.2" }) },
      /^routes holds 10001 entries; at most 10000 are allowed per call$/,
    ],
    [
      N.reportRoutes,
      { ...node, routes: [{ nodeName: "n", subnet: "10.244.2.1/24", nodeIp: "10.0.0.2" }] },
      /^routes\[0\].subnet "10.244.2.1\/24" has host bits set; did you mean 10.244.2.0\/24\?$/,
    ],
    [
      N.reportRoutes,
      { ...node, routes: [{ nodeName: "n", subnet: "10.244.2.0/31", nodeIp: "10.0.0.2" }] },
      /^routes\[0\].subnet 10.244.2.0\/31 has prefix length \/31; from \/0 to \/30 is allowed$/,
    ],
    [
      N.reportRoutes,
      { ...node, routes: [{ nodeName: "n", subnet: "10.244.2.0/24", nodeIp: "fe80::1" }] },
      /^routes\[0\].node_ip "fe80::1" is not an IPv4 address$/,
    ],
    [
      N.reportRoutes,
      { ...node, routes: [{ nodeName: "", subnet: "10.244.2.0/24", nodeIp: "10.0.0.2" }] },
      /^routes\[0\].node_name is required$/,
    ],
    [N.renewCertificate, node, /^csr_pem is required$/],
    [N.renewCertificate, { ...node, csrPem: long(16 * 1024 + 1) }, /^csr_pem is 16385 characters long; at most 16384 are allowed$/],
    [JoinService.method.join, { ...node, csrPem: csr }, /^token is required$/],
    [JoinService.method.join, { token: long(129), ...node, csrPem: csr }, /^token is 129 characters long; at most 128 are allowed$/],
    [
      JoinService.method.join,
      { token: "ABCDEF.0123456789abcdef", ...node, csrPem: csr },
      /^the join token is not of the form abcdef.0123456789abcdef \(6 and 16 lowercase/,
    ],
    [JoinService.method.join, { token: "abcdef.0123456789abcdef", nodeName: "", csrPem: csr }, /^node_name is required$/],
    [JoinService.method.join, { token: "abcdef.0123456789abcdef", ...node }, /^csr_pem is required$/],
    [A.getNode, { name: "Node-1" }, /^name "Node-1" is not a valid node name/],
    [A.evictNode, { name: "" }, /^name is required$/],
    [A.drainNode, { name: "" }, /^name is required$/],
    [A.listAllocations, { nodeName: "node_1" }, /^node_name "node_1" is not a valid node name/],
    [A.lookupAddress, { address: "10.244.1.05" }, /^address "10.244.1.05" is not an IPv4 address$/],
    [A.getRoutes, { nodeName: "" }, /^node_name is required$/],
    [A.createJoinToken, { ...node, ttlSeconds: 59n }, /^ttl_seconds 59 is not between 60 and 86400; 0 means the default \(3600\)$/],
    [A.createJoinToken, { ...node, ttlSeconds: 86_401n }, /^ttl_seconds 86401 is not between 60 and 86400/],
    [A.createJoinToken, { ...node, ttlSeconds: -1n }, /^ttl_seconds -1 is not between 60 and 86400/],
    [A.createJoinToken, { nodeName: "" }, /^node_name is required$/],
    [A.setRouter, { nodeName: "a..b!", router: true }, /^node_name "a..b!" is not a valid node name/],
    [A.releaseLease, { subnet: "10.244.1.0/33" }, /^subnet "10.244.1.0\/33" is not an IPv4 CIDR like 10.244.0.0\/16$/],
    [A.releaseLease, { subnet: "" }, /^subnet is required$/],
    [A.releaseLease, { subnet: "10.244.1.0/31" }, /^subnet 10.244.1.0\/31 has prefix length \/31; from \/1 to \/30 is allowed$/],
    [A.deleteReservation, { subnet: "0.0.0.0/0" }, /^subnet 0.0.0.0\/0 has prefix length \/0; from \/1 to \/30 is allowed$/],
    [A.deleteReservation, { subnet: "10.0.0.0/08" }, /^subnet "10.0.0.0\/08" is not in canonical form; write 10.0.0.0\/8$/],
    [A.reserveSubnet, { subnet: "10.244.1.7/24", ...node }, /^subnet "10.244.1.7\/24" has host bits set/],
    [
      A.reserveSubnet,
      { subnet: "10.244.1.0/24", nodeName: "x".repeat(300) },
      /^node_name is 300 characters long; at most 253 are allowed$/,
    ],
  ];
  it.each(bad.map(([m, init, pattern]) => [methodKey(m), pattern, m, init] as const))("%s: %s", (_key, pattern, method, init) => {
    expect(rejection(method, create(method.input as DescMessage, init as never))).toMatch(pattern);
  });

  it("never quotes a join token in its message (the secret would reach logs)", () => {
    const secret = "0123456789ABCDEF";
    const message = rejection(
      JoinService.method.join,
      create(JoinService.method.join.input, { token: `abcdef.${secret}`, ...node, csrPem: csr }),
    );
    expect(message).not.toContain(secret);
  });
});

/** Every string, enum and repeated field of `desc` reachable from `example` (first element of lists), by path. */
interface Reachable {
  readonly path: string;
  readonly kind: "string" | "enum" | "list";
  /** Sets the field in `root`, a clone of the example; for lists, to `value` copies of its first element. */
  readonly set: (root: Message, value: string | number) => void;
}

type Fields = Record<string, unknown>;

function reachable(desc: DescMessage, example: Fields, prefix = "", at: (root: Fields) => Fields = (r) => r): Reachable[] {
  return desc.fields.flatMap((f): Reachable[] => {
    const path = `${prefix}${f.name}`;
    const setOn = (root: Message, value: unknown) => {
      at(root as unknown as Fields)[f.localName] = value;
    };
    if (f.fieldKind === "scalar" && typeof example[f.localName] === "string") return [{ path, kind: "string", set: setOn }];
    if (f.fieldKind === "enum") return [{ path, kind: "enum", set: setOn }];
    if (f.fieldKind === "message") {
      const inner = example[f.localName] as Fields | undefined;
      return inner ? reachable(f.message, inner, `${path}.`, (r) => at(r)[f.localName] as Fields) : [];
    }
    if (f.fieldKind !== "list") return [];
    const list = example[f.localName] as unknown[];
    if (list.length === 0) return [];
    const asList: Reachable = {
      path,
      kind: "list",
      set: (root, n) => {
        const items = at(root as unknown as Fields)[f.localName] as unknown[];
        at(root as unknown as Fields)[f.localName] = Array(Number(n)).fill(items[0]);
      },
    };
    const items = (root: Message) => at(root as unknown as Fields)[f.localName] as unknown[];
    const setFirst = (root: Message, value: unknown) => {
      items(root)[0] = value;
    };
    if (f.listKind === "scalar" && typeof list[0] === "string") return [asList, { path: `${path}[0]`, kind: "string", set: setFirst }];
    if (f.listKind === "enum") return [asList, { path: `${path}[0]`, kind: "enum", set: setFirst }];
    if (f.listKind === "message") {
      return [asList, ...reachable(f.message, list[0] as Fields, `${path}[0].`, (r) => (at(r)[f.localName] as Fields[])[0] as Fields)];
    }
    return [asList];
  });
}

describe("no field goes unbounded (checked from the descriptors, so new fields are covered too)", () => {
  const cases = valid.flatMap(([method, example]) =>
    reachable(method.input, example as unknown as Fields).map(
      (field) => [`${methodKey(method)} ${field.path}`, method, example, field] as const,
    ),
  );

  it("reaches the fields of the examples", () => {
    expect(cases.map(([name]) => name)).toEqual(
      expect.arrayContaining([
        "trellis.controlplane.v1.NodeService/SyncAllocations recorded[0].attachment.pod_uid",
        "trellis.controlplane.v1.NodeService/SyncAllocations released",
        "trellis.controlplane.v1.NodeService/ReportRoutes routes[0].node_ip",
      ]),
    );
  });

  it.each(cases)("%s", (_name, method, example, field) => {
    const message = clone(method.input, example);
    // Strings: 64 Ki characters; enums: a value no enum has; lists: 100,001 entries.
    field.set(message, field.kind === "string" ? "x".repeat(65_536) : field.kind === "enum" ? 99_999 : 100_001);
    expect(rejection(method, message)).toContain(field.path);
  });
});

describe("bounds against what the daemon sends", () => {
  it("a SyncAllocations call takes twice the daemon's largest batch of each kind", () => {
    expect(syncAllocationsLimit).toBeGreaterThanOrEqual(2 * mirrorBatchLimit);
  });
});

describe("requestValidation() on a Connect router", () => {
  function serve() {
    const handled: string[] = [];
    const transport = createRouterTransport(
      (router) => {
        router.service(NodeService, {
          registerNode(r) {
            handled.push(`register ${r.nodeName}`);
            return create(RegisterNodeResponseSchema, { subnet: "10.244.1.0/24" });
          },
          async *watchRoutes(r) {
            handled.push(`watch ${r.nodeName}`);
            yield create(WatchRoutesResponseSchema, { revision: 1n, snapshot: true });
          },
        });
      },
      { router: { interceptors: [serverInterceptor(pino({ level: "silent" })), requestValidation()] } },
    );
    return { client: createClient(NodeService, transport), handled };
  }

  it("answers an invalid unary request with INVALID_ARGUMENT and the message, before the handler", async () => {
    const { client, handled } = serve();
    const err = ConnectError.from(
      await client.registerNode({ nodeName: "node-1", nodeIp: "10.0.0.300", mtu: 1500 }).catch((e: unknown) => e),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe('node_ip "10.0.0.300" is not an IPv4 address');
    expect(err.metadata.get("trellis-reason")).toBe("INVALID_ARGUMENT");
    expect(handled).toEqual([]);
    await client.registerNode({ nodeName: "node-1", nodeIp: "10.0.0.30", mtu: 1500 });
    expect(handled).toEqual(["register node-1"]);
  });

  it("checks a server-streaming request's message before the handler runs", async () => {
    const { client, handled } = serve();
    const read = async (fromRevision: bigint) => {
      const got: bigint[] = [];
      for await (const m of client.watchRoutes({ nodeName: "node-1", fromRevision })) got.push(m.revision);
      return got;
    };
    const err = ConnectError.from(await read(-3n).catch((e: unknown) => e));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe("from_revision -3 is negative; 0 or more is allowed");
    expect(handled).toEqual([]);
    expect(await read(0n)).toEqual([1n]);
    expect(handled).toEqual(["watch node-1"]);
  });
});
