// Every field of every control-plane request is checked before a handler sees it (DESIGN.md §6: "every
// RPC field is validated"): one pure validator per method, keyed "<service type name>/<Method>", and the
// interceptor that runs it. Each string is bounded before anything parses it (or quotes it in an error);
// the checks themselves are the ones the domain applies (proto/core, nodes, subnets, allocations, identity), not copies.
import type { DescMethod, DescService, Message, MessageShape } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { Cidr, parseIpv4 } from "../../proto/core/cidr.js";
import { containerIdPattern, invalidIfNameReason } from "../../proto/core/cni-names.js";
import { TrellisError } from "../../proto/core/errors.js";
import { checkNodeName } from "../../proto/core/node-name.js";
import { AdminService } from "../../proto/gen/trellis/admin/v1/admin_pb.js";
import type { AllocationRecord } from "../../proto/gen/trellis/cni/v1/cni_pb.js";
import { JoinService, NodeService, type Route } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { checkSyncBatchSize } from "../allocations/allocation-mirror.js";
import { joinTokenLifetimeS, parseJoinToken } from "../identity/join-token.js";
import { checkMtu } from "../nodes/registrar.js";
import { subnetPrefixLengths } from "../subnets/subnet-pool.js";
import { maxAllocationsPage } from "./admin-service.js";

/** The bounds applied here, in one place (the unit test and the report name them). */
export const requestLimits = {
  /** Kubernetes' longest name (a DNS subdomain): node names, pod namespace, name and uid, network name. */
  nameChars: 253,
  /** CNI container ids (runtimes use 64 hex characters). */
  containerIdChars: 256,
  /** A netns path (PATH_MAX). */
  pathChars: 4096,
  /** Dotted IPv4 text, and a CIDR with its prefix. */
  ipv4Chars: 15,
  cidrChars: 18,
  /** Linux interface names are at most 15 bytes (invalidIfNameReason checks bytes). */
  ifNameChars: 15,
  /** Join tokens are 23 characters; anything past this is not one. */
  tokenChars: 128,
  /** A PEM certificate request (an EC or RSA-4096 key's is well under 4 KiB). */
  csrPemChars: 16 * 1024,
  /** Routes one ReportRoutes call may carry: one per other node. */
  reportedRoutes: 10_000,
} as const;

type RequestValidator = (req: Message) => void;

/** One validator for each method of `S`, typed by that method's request message. */
type ServiceValidators<S extends DescService> = {
  readonly [K in keyof S["method"]]: (req: MessageShape<S["method"][K]["input"]>) => void;
};

const invalid = (message: string) => new TrellisError("INVALID_ARGUMENT", message);

/** Rejects `value` longer than `max` characters without quoting it (it may be huge, or a secret). */
function bounded(value: string, field: string, max: number): string {
  if (value.length > max) throw invalid(`${field} is ${value.length} characters long; at most ${max} are allowed`);
  return value;
}

function required(value: string, field: string, max: number): string {
  if (!value) throw invalid(`${field} is required`);
  return bounded(value, field, max);
}

function nodeName(value: string, field: string): string {
  return checkNodeName(required(value, field, requestLimits.nameChars), field);
}

function ipv4(value: string, field: string): bigint {
  return parseIpv4(required(value, field, requestLimits.ipv4Chars), field);
}

/** An underlay next hop: a unicast address (not 0.0.0.0/8, multicast, or the reserved 240.0.0.0/4 and broadcast). */
function nodeIp(value: string, field: string): void {
  const first = Number(ipv4(value, field) >> 24n);
  if (first === 0 || first >= 224) {
    throw invalid(`${field} ${value} is not a unicast address; a node IP is not in 0.0.0.0/8, 224.0.0.0/4 or 240.0.0.0/4`);
  }
}

/** A CIDR in canonical text (no host bits, no leading zeros) with a prefix length from `min` to /30. */
function cidr(value: string, field: string, min: number): Cidr {
  const parsed = Cidr.parse(required(value, field, requestLimits.cidrChars), field);
  if (parsed.toString() !== value) throw invalid(`${field} ${JSON.stringify(value)} is not in canonical form; write ${parsed.toString()}`);
  const { max } = subnetPrefixLengths;
  if (parsed.prefixLength < min || parsed.prefixLength > max) {
    throw invalid(`${field} ${value} has prefix length /${parsed.prefixLength}; from /${min} to /${max} is allowed`);
  }
  return parsed;
}

/** A node's pod subnet, as leased or reserved. */
const subnet = (value: string, field: string) => cidr(value, field, subnetPrefixLengths.min);

function nonNegative(value: bigint, field: string): void {
  if (value < 0n) throw invalid(`${field} ${value} is negative; 0 or more is allowed`);
}

function atMost(count: number, field: string, max: number): void {
  if (count > max) throw invalid(`${field} holds ${count} entries; at most ${max} are allowed per call`);
}

function ifName(value: string, field: string): void {
  const reason = invalidIfNameReason(bounded(value, field, requestLimits.ifNameChars));
  if (reason) throw invalid(`${field} ${JSON.stringify(value)} ${reason}`);
}

function containerId(value: string, field: string): void {
  required(value, field, requestLimits.containerIdChars);
  if (!containerIdPattern.test(value)) {
    throw invalid(`${field} ${JSON.stringify(value)} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'`);
  }
}

/** A pod allocation as the daemon records it: the CNI rules the daemon applied on ADD, and bounded free text. */
function allocation(record: AllocationRecord | undefined, field: string): void {
  if (!record) throw invalid(`${field} is required`);
  ipv4(record.address, `${field}.address`);
  const a = record.attachment;
  if (!a) throw invalid(`${field}.attachment is required`);
  bounded(a.networkName, `${field}.attachment.network_name`, requestLimits.nameChars);
  containerId(a.containerId, `${field}.attachment.container_id`);
  ifName(a.ifName, `${field}.attachment.if_name`);
  bounded(a.netns, `${field}.attachment.netns`, requestLimits.pathChars);
  bounded(a.podNamespace, `${field}.attachment.pod_namespace`, requestLimits.nameChars);
  bounded(a.podName, `${field}.attachment.pod_name`, requestLimits.nameChars);
  bounded(a.podUid, `${field}.attachment.pod_uid`, requestLimits.nameChars);
  ifName(record.hostVeth, `${field}.host_veth`);
  nonNegative(record.createdAtMs, `${field}.created_at_ms`);
}

/** A route the node holds: another node's subnet, or (central router) the cluster CIDR. */
function route(r: Route, field: string): void {
  nodeName(r.nodeName, `${field}.node_name`);
  cidr(r.subnet, `${field}.subnet`, 0);
  nodeIp(r.nodeIp, `${field}.node_ip`);
}

const csrPem = (value: string, field: string) => required(value, field, requestLimits.csrPemChars);

function joinToken(value: string, field: string): void {
  parseJoinToken(required(value, field, requestLimits.tokenChars));
}

const nothing = () => {};

const nodeService: ServiceValidators<typeof NodeService> = {
  registerNode(req) {
    nodeName(req.nodeName, "node_name");
    nodeIp(req.nodeIp, "node_ip");
    if (req.mtu !== 0) checkMtu(req.mtu); // 0: the default
    if (req.heldSubnet !== "") subnet(req.heldSubnet, "held_subnet");
    bounded(req.instance, "instance", 64);
  },
  heartbeat: (req) => nodeName(req.nodeName, "node_name"),
  deregisterNode: (req) => nodeName(req.nodeName, "node_name"),
  watchRoutes(req) {
    nodeName(req.nodeName, "node_name");
    nonNegative(req.fromRevision, "from_revision");
  },
  recordAllocation(req) {
    nodeName(req.nodeName, "node_name");
    allocation(req.allocation, "allocation");
  },
  releaseAllocation(req) {
    nodeName(req.nodeName, "node_name");
    ipv4(req.address, "address");
  },
  syncAllocations(req) {
    nodeName(req.nodeName, "node_name");
    checkSyncBatchSize(req.recorded.length, req.released.length);
    for (const [i, r] of req.recorded.entries()) allocation(r, `recorded[${i}]`);
    for (const [i, a] of req.released.entries()) ipv4(a, `released[${i}]`);
  },
  listNodeAllocations: (req) => nodeName(req.nodeName, "node_name"),
  reportRoutes(req) {
    nodeName(req.nodeName, "node_name");
    nonNegative(req.revision, "revision");
    atMost(req.routes.length, "routes", requestLimits.reportedRoutes);
    for (const [i, r] of req.routes.entries()) route(r, `routes[${i}]`);
    atMost(req.missing.length, "missing", requestLimits.reportedRoutes);
    for (const [i, r] of req.missing.entries()) route(r, `missing[${i}]`);
    if (req.digest.length !== 0 && req.digest.length !== 32) {
      throw invalid(`digest is ${req.digest.length} bytes long; a route digest is a SHA-256 (32 bytes), or empty`);
    }
  },
  renewCertificate(req) {
    nodeName(req.nodeName, "node_name");
    csrPem(req.csrPem, "csr_pem");
  },
};

const joinService: ServiceValidators<typeof JoinService> = {
  join(req) {
    joinToken(req.token, "token");
    nodeName(req.nodeName, "node_name");
    csrPem(req.csrPem, "csr_pem");
  },
};

const adminService: ServiceValidators<typeof AdminService> = {
  listNodes: nothing,
  getNode: (req) => nodeName(req.name, "name"),
  listLeases: nothing,
  listReservations: nothing,
  listAllocations(req) {
    if (req.nodeName) nodeName(req.nodeName, "node_name"); // empty: every node's
    if (req.pageSize > maxAllocationsPage)
      throw invalid(`page_size ${req.pageSize} is more than ${maxAllocationsPage}; 0 means ${maxAllocationsPage}`);
    if (req.pageToken !== "") {
      const [node = "", address = "", ...rest] = bounded(req.pageToken, "page_token", 300).split("/");
      if (rest.length > 0 || !node || !address || (req.nodeName && node !== req.nodeName)) {
        throw invalid(
          "page_token is not one this call gave out: pass next_page_token of the previous answer unchanged, with the same node_name",
        );
      }
      nodeName(node, "page_token");
      ipv4(address, "page_token");
    }
  },
  lookupAddress: (req) => ipv4(req.address, "address"),
  getRoutes: (req) => nodeName(req.nodeName, "node_name"),
  getClusterConfig: nothing,
  createJoinToken(req) {
    nodeName(req.nodeName, "node_name");
    joinTokenLifetimeS(req.ttlSeconds, "ttl_seconds");
  },
  setRouter: (req) => nodeName(req.nodeName, "node_name"),
  drainNode: (req) => nodeName(req.name, "name"),
  evictNode: (req) => nodeName(req.name, "name"),
  releaseLease: (req) => subnet(req.subnet, "subnet"),
  reserveSubnet(req) {
    subnet(req.subnet, "subnet");
    nodeName(req.nodeName, "node_name");
  },
  deleteReservation: (req) => subnet(req.subnet, "subnet"),
  watchEvents: nothing,
};

/** "trellis.controlplane.v1.NodeService/RegisterNode": how the table names a method. */
export const methodKey = (method: DescMethod) => `${method.parent.typeName}/${method.name}`;

function entries<S extends DescService>(service: S, validators: ServiceValidators<S>): Array<[string, RequestValidator]> {
  const byLocalName = validators as unknown as Record<string, RequestValidator | undefined>;
  return service.methods.flatMap((m) => {
    const validate = byLocalName[m.localName];
    return validate ? [[methodKey(m), validate] as [string, RequestValidator]] : [];
  });
}

/** The services whose every request is validated; calls to any other service (health, reflection) pass. */
export const validatedServices: readonly DescService[] = [NodeService, AdminService, JoinService];

export const requestValidators: ReadonlyMap<string, RequestValidator> = new Map([
  ...entries(NodeService, nodeService),
  ...entries(AdminService, adminService),
  ...entries(JoinService, joinService),
]);

const validatedTypeNames = new Set(validatedServices.map((s) => s.typeName));

/**
 * Checks `message`, a request of `method`; throws INVALID_ARGUMENT naming the field, what is wrong with it
 * and what is allowed. A method of a validated service without a validator is refused (INTERNAL): a new
 * RPC is never served unchecked. Pure.
 */
export function validateRequest(method: DescMethod, message: Message): void {
  const validate = requestValidators.get(methodKey(method));
  if (validate) validate(message);
  else if (validatedTypeNames.has(method.parent.typeName)) {
    throw new TrellisError("INTERNAL", `no request validator for ${methodKey(method)}`);
  }
}

/** Server interceptor: validates every request message (unary, or each message of a stream) before the handler. */
export function requestValidation(): Interceptor {
  return (next) => async (req) => {
    if (!req.stream) {
      validateRequest(req.method, req.message);
      return next(req);
    }
    const method = req.method;
    const messages = req.message;
    async function* validated() {
      for await (const message of messages) {
        validateRequest(method, message);
        yield message;
      }
    }
    return next({ ...req, message: validated() });
  };
}
