import type { Uplink } from "./uplink.js";

/** The node's bridge: the pods' gateway. */
export interface BridgeSpec {
  readonly name: string;
  readonly mac: string;
  /** Gateway address with the subnet's prefix, e.g. "10.244.1.1/24". */
  readonly address: string;
  readonly mtu: number;
}

/** Everything the kernel must hold for one attachment. */
export interface VethSpec {
  readonly bridge: string;
  readonly hostName: string;
  readonly hostMac: string;
  readonly podIfName: string;
  readonly podMac: string;
  readonly netns: string;
  readonly mtu: number;
  /** Pod address with the subnet's prefix, e.g. "10.244.1.5/24". */
  readonly podAddress: string;
  readonly gateway: string;
}

/** A route Trellis owns in the node's main table (stamped with its route protocol). */
export interface OwnedRoute {
  /** Canonical CIDR, e.g. "10.244.2.0/24". */
  readonly dst: string;
  readonly via: string;
}

/** A route of the node's main table, as read back from the kernel. */
export interface KernelRoute extends OwnedRoute {
  /** Stamped with Trellis's route protocol: Trellis may change or delete it, and nothing else. */
  readonly owned: boolean;
}

export interface LinkInfo {
  readonly name: string;
  /** Name of the bridge the link is a port of, if any. */
  readonly master?: string;
  readonly kind?: string;
}

/** What the kernel holds for one attachment, read back for CHECK. */
export interface VethState {
  /** The host end in the node's namespace; undefined when it does not exist. */
  readonly host?: { readonly master?: string; readonly up: boolean };
  /** The pod interface in the pod's namespace; undefined when it (or the namespace) does not exist. */
  readonly pod?: { readonly up: boolean; readonly addresses: readonly string[]; readonly defaultVia?: string };
}

/** The kernel work of a node, behind one seam (STYLE.md P4). Every method is idempotent. */
export interface Netlink {
  /** Bridge up with its gateway address, MAC and MTU; leaves other addresses on it alone. */
  ensureBridge(bridge: BridgeSpec): Promise<void>;
  enableIpv4Forwarding(): Promise<void>;
  /**
   * Creates the veth pair with the peer directly inside `netns` as the pod interface, attaches the host
   * end to the bridge and configures the pod side (address, up, default route).
   * Throws ALREADY_EXISTS when the pod interface name is taken in the netns.
   */
  addVeth(veth: VethSpec): Promise<void>;
  inspectVeth(veth: VethSpec): Promise<VethState>;
  /** Deletes a link in the node's namespace; false when it did not exist. */
  deleteLink(name: string): Promise<boolean>;
  listLinks(): Promise<LinkInfo[]>;
  /** Every route of the main table. */
  listRoutes(): Promise<KernelRoute[]>;
  /** Replaces (adds or corrects) and removes owned routes in one batch. */
  applyRoutes(replace: readonly OwnedRoute[], remove: readonly OwnedRoute[]): Promise<void>;
  /** The interface holding `nodeIp` and its MTU; throws INVALID_ARGUMENT, saying what to do, when none does. */
  findUplink(nodeIp: string): Promise<Uplink>;
}
