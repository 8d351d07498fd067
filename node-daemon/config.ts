import { parseIpv4 } from "../proto/core/cidr.js";
import { invalidIfNameReason } from "../proto/core/cni-names.js";
import { TrellisError } from "../proto/core/errors.js";
import { checkLogLevel, parseFlags, parseHostPort, parseIntFlag, parseMetricsAddress } from "../proto/core/flags.js";
import { checkNodeName } from "../proto/core/node-name.js";
import { defaultDaemonSocket } from "../proto/core/protocol.js";
import { type ConflistCniVersion, conflistCniVersions } from "./cni/plan.js";

export interface DaemonConfig {
  readonly nodeName: string;
  readonly nodeIp: string;
  /** "host:port" of every control-plane replica. */
  readonly controlPlanes: readonly string[];
  readonly socketPath: string;
  readonly bridge: string;
  readonly stateDir: string;
  /** The pod MTU from --mtu; undefined: the MTU of the node's uplink (the interface holding the node IP). */
  readonly mtu?: number;
  /** Masquerade pod traffic leaving the cluster CIDR to the node's IP (Trellis's own nftables table). */
  readonly masquerade: boolean;
  readonly heartbeatIntervalMs: number;
  readonly routeResyncIntervalMs: number;
  /** Where the conflist goes once the daemon serves; "" to leave the CNI config to the operator. */
  readonly cniConfDir: string;
  readonly cniConfName: string;
  /** The conflist's cniVersion (--cni-version). */
  readonly cniVersion: ConflistCniVersion;
  readonly logLevel: string;
  /** Where to serve metrics over HTTP (--metrics-address); undefined: no metrics listener. */
  readonly metrics?: { readonly host: string; readonly port: number };
  /**
   * Mutual TLS to the control plane: the cluster CA's file, this node's credential file (key and
   * certificate, written by joining and renewed in place), the join token's file, and the port of the
   * replicas' join listeners. Undefined: cleartext (a lab control plane with --insecure-plaintext).
   */
  readonly tls?: {
    readonly caFile: string;
    readonly credentialFile: string;
    readonly joinTokenFile?: string;
    readonly joinPort: number;
  };
}

export const daemonHelp = `Usage: trellis-node-daemon --node-name NAME --node-ip IP [flags]
       trellis-node-daemon leave --node-name NAME --node-ip IP [flags]

The Trellis node daemon: registers the node with the control plane and leases its pod subnet, sets up
the node bridge (gateway = first address of the subnet) and IPv4 forwarding, serves the CNI shim on a
root-only unix socket (one veth pair per pod), and keeps one host-gw route per other node, following the
control plane's route stream. Pod addresses are recorded in --state-dir before ADD answers.

Flags:
  --node-name NAME          this node's name, as the cluster knows it (required)
  --node-ip IP              this node's underlay IPv4 address, the next hop other nodes use (required)
  --control-plane ADDRS     comma-separated HOST:PORT of control-plane replicas (default 127.0.0.1:6443)
  --socket PATH             unix socket for the CNI shim, mode 0600 (default ${defaultDaemonSocket})
  --bridge NAME             node bridge name (default trellis0)
  --state-dir DIR           durable allocation records (default /var/lib/trellis)
  --mtu N                   MTU of the bridge and pod interfaces (default: the MTU of the node's uplink,
                            the interface that holds --node-ip)
  --no-masquerade           do not masquerade pod traffic to outside the cluster CIDR (for networks where
                            pod addresses are routable); removes Trellis's nftables table (table ip trellis).
                            Masquerade (the default) needs nftables 0.9.3 or newer (the nft command)
  --heartbeat-interval S    seconds between heartbeats to the control plane (default 10)
  --route-resync S          seconds between full reconciliations (routes against the kernel, allocations
                            against the control plane's copy, DELs left while the daemon was down) (default 30)
  --cni-conf-dir DIR        where to write the CNI conflist once the daemon holds its lease and serves
                            the socket; "" to not write one (default /etc/cni/net.d)
  --cni-conf-name FILE      the conflist's file name (default 10-trellis.conflist)
  --cni-version V           cniVersion of the conflist: 1.0.0 (default) or 1.1.0; 1.1.0 for runtimes whose
                            libcni has STATUS and GC (libcni 1.2 or newer); the shim answers both either way
  --ca-cert FILE            the cluster CA certificate: talk to the control plane over mutual TLS, as this
                            node (default: cleartext, for a lab control plane with --insecure-plaintext)
  --credential FILE         this node's private key and certificate, in one file of mode 0600: written when
                            the node joins, renewed in place before it expires (default STATE-DIR/node.pem)
  --join-token-file FILE    a join token (AdminService.CreateJoinToken for this node name), needed only
                            while there is no valid certificate in --credential; used once
  --join-port N             port of the control planes' join listener, on the --control-plane hosts
                            (default 6444)
  --metrics-address A       serve Prometheus metrics on HOST:PORT, GET /metrics, plain HTTP without
                            authentication (default 127.0.0.1:9464, loopback only; port 0 picks a free one;
                            "off": none). A port in use stops the daemon at start-up, before it joins
  --log-level LEVEL         trace, debug, info, warn or error (default info)
  -h, --help                print this help and exit

SIGTERM or SIGINT: stop serving and exit; the node keeps its route, its routes to the other nodes and its
pods (stopping is not leaving: a restart or an upgrade cuts no traffic). A daemon that stays down longer
than the control plane's --lease-ttl loses its route then; its subnet stays its own for the grace period.

leave: with the daemon stopped (it refuses while one serves --socket), tells the control plane the node
leaves (its route is withdrawn at once; its subnet stays reserved for the grace period and its certificate
stays valid), removes this node's routes to the other nodes and Trellis's nftables table, and exits.
Takes the daemon's own flags (the same environment file); pods keep their interfaces. An admin can do the
same from elsewhere for a node that is down: AdminService.DrainNode.
`;

/** The command the first argument names ("leave"), or "run"; the flags that follow. Pure. */
export function daemonCommand(argv: readonly string[]): { command: "run" | "leave"; flags: readonly string[] } {
  return argv[0] === "leave" ? { command: "leave", flags: argv.slice(1) } : { command: "run", flags: argv };
}

/** Parses flags; throws INVALID_ARGUMENT naming the flag. Returns "help" for --help. Pure. */
export function parseDaemonArgs(argv: readonly string[]): DaemonConfig | "help" {
  const { values } = parseFlags(argv, {
    "node-name": { type: "string", default: "" },
    "node-ip": { type: "string", default: "" },
    "ca-cert": { type: "string", default: "" },
    credential: { type: "string", default: "" },
    "join-token-file": { type: "string", default: "" },
    "join-port": { type: "string", default: "6444" },
    "control-plane": { type: "string", default: "127.0.0.1:6443" },
    socket: { type: "string", default: defaultDaemonSocket },
    bridge: { type: "string", default: "trellis0" },
    "state-dir": { type: "string", default: "/var/lib/trellis" },
    mtu: { type: "string", default: "" },
    "no-masquerade": { type: "boolean", default: false },
    "heartbeat-interval": { type: "string", default: "10" },
    "route-resync": { type: "string", default: "30" },
    "cni-conf-dir": { type: "string", default: "/etc/cni/net.d" },
    "cni-conf-name": { type: "string", default: "10-trellis.conflist" },
    "cni-version": { type: "string", default: "1.0.0" },
    "log-level": { type: "string", default: "info" },
    "metrics-address": { type: "string", default: "127.0.0.1:9464" },
    router: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  if (!values["node-name"]) throw new TrellisError("INVALID_ARGUMENT", "--node-name is required; see --help");
  checkNodeName(values["node-name"], "--node-name");
  if (!values["node-ip"]) throw new TrellisError("INVALID_ARGUMENT", "--node-ip is required; see --help");
  parseIpv4(values["node-ip"], "--node-ip");
  const controlPlanes = values["control-plane"]
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (controlPlanes.length === 0) throw new TrellisError("INVALID_ARGUMENT", "--control-plane is empty");
  for (const a of controlPlanes) parseHostPort(a, "--control-plane");
  const bridgeReason = invalidIfNameReason(values.bridge);
  if (bridgeReason) throw new TrellisError("INVALID_ARGUMENT", `--bridge ${JSON.stringify(values.bridge)} ${bridgeReason}`);
  if (!values.socket.startsWith("/")) throw new TrellisError("INVALID_ARGUMENT", `--socket ${values.socket} must be an absolute path`);
  if (values["cni-conf-dir"] !== "" && !values["cni-conf-dir"].startsWith("/")) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--cni-conf-dir ${values["cni-conf-dir"]} must be an absolute path (or "" to not write a conflist)`,
    );
  }
  if (!/^[\w.-]+\.conflist$/.test(values["cni-conf-name"])) {
    throw new TrellisError("INVALID_ARGUMENT", `--cni-conf-name ${values["cni-conf-name"]} must be a file name ending in .conflist`);
  }
  if (!values["state-dir"].startsWith("/"))
    throw new TrellisError("INVALID_ARGUMENT", `--state-dir ${values["state-dir"]} must be an absolute path`);
  if (values.router) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      "--router is no longer a node flag: central-router mode is cluster config that an admin sets (AdminService.SetRouter)",
    );
  }
  if (!values["ca-cert"] && (values.credential || values["join-token-file"])) {
    throw new TrellisError("INVALID_ARGUMENT", "--credential and --join-token-file need --ca-cert (the cluster CA certificate)");
  }
  const joinPort = parseIntFlag(values["join-port"], "--join-port", 1, 65535);
  const metrics = parseMetricsAddress(values["metrics-address"], "--metrics-address");
  return {
    ...(metrics ? { metrics } : {}),
    ...(values["ca-cert"]
      ? {
          tls: {
            caFile: values["ca-cert"],
            credentialFile: values.credential || `${values["state-dir"].replace(/\/+$/, "")}/node.pem`,
            ...(values["join-token-file"] ? { joinTokenFile: values["join-token-file"] } : {}),
            joinPort,
          },
        }
      : {}),
    nodeName: values["node-name"],
    nodeIp: values["node-ip"],
    controlPlanes,
    socketPath: values.socket,
    bridge: values.bridge,
    stateDir: values["state-dir"],
    ...(values.mtu === "" ? {} : { mtu: parseIntFlag(values.mtu, "--mtu", 576, 65535) }),
    masquerade: !values["no-masquerade"],
    heartbeatIntervalMs: parseIntFlag(values["heartbeat-interval"], "--heartbeat-interval", 1, 3600) * 1000,
    routeResyncIntervalMs: parseIntFlag(values["route-resync"], "--route-resync", 1, 3600) * 1000,
    logLevel: checkLogLevel(values["log-level"]),
    cniConfDir: values["cni-conf-dir"],
    cniConfName: values["cni-conf-name"],
    cniVersion: conflistVersion(values["cni-version"]),
  };
}

function conflistVersion(text: string): ConflistCniVersion {
  const version = conflistCniVersions.find((v) => v === text);
  if (!version) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--cni-version ${JSON.stringify(text)} is not a conflist version the daemon writes: give 1.0.0 (the default, for any CNI 1.x runtime) or 1.1.0 (for runtimes whose libcni has STATUS and GC: libcni 1.2 or newer)`,
    );
  }
  return version;
}
