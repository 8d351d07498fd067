import { Cidr } from "../proto/common/cidr.js";
import { TrellisError } from "../proto/common/errors.js";
import { checkLogLevel, parseFlags, parseHostPort, parseIntFlag } from "../proto/common/flags.js";

export interface ControlPlaneConfig {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  readonly listenHost: string;
  readonly listenPort: number;
  readonly clusterCidr: Cidr;
  readonly subnetPrefixLength: number;
  readonly logLevel: string;
}

export const controlPlaneHelp = `Usage: trellis-control-plane [flags]

The Trellis control plane: leases each node a pod subnet of the cluster CIDR, streams the cluster's
host-gw routes to every node daemon, and serves the admin API (gRPC, with server reflection and
grpc.health.v1). All state lives in etcd; any number of replicas may share one etcd.

Flags:
  --etcd-endpoints URLS     comma-separated etcd client URLs (default http://127.0.0.1:2379)
  --etcd-prefix PREFIX      key prefix in etcd (default /trellis/v1)
  --listen HOST:PORT        where to serve gRPC (default 127.0.0.1:6443; port 0 picks a free one)
  --cluster-cidr CIDR       the pod network, split into node subnets (default 10.244.0.0/16)
  --subnet-size N           prefix length of each node's subnet (default 24)
  --log-level LEVEL         trace, debug, info, warn or error (default info)
  -h, --help                print this help and exit

Without TLS (not yet supported) the control plane should listen on loopback or a trusted network only.
`;

/** Parses flags; throws INVALID_ARGUMENT naming the flag. Returns "help" for --help. Pure. */
export function parseControlPlaneArgs(argv: readonly string[]): ControlPlaneConfig | "help" {
  const { values } = parseFlags(argv, {
    "etcd-endpoints": { type: "string", default: "http://127.0.0.1:2379" },
    "etcd-prefix": { type: "string", default: "/trellis/v1" },
    listen: { type: "string", default: "127.0.0.1:6443" },
    "cluster-cidr": { type: "string", default: "10.244.0.0/16" },
    "subnet-size": { type: "string", default: "24" },
    "log-level": { type: "string", default: "info" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  const { host, port } = parseHostPort(values.listen, "--listen");
  const subnetPrefixLength = parseIntFlag(values["subnet-size"], "--subnet-size", 1, 30);
  const clusterCidr = Cidr.parse(values["cluster-cidr"], "--cluster-cidr");
  if (clusterCidr.subnetCount(subnetPrefixLength) === 0n) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--cluster-cidr ${clusterCidr.toString()} is smaller than one /${subnetPrefixLength} node subnet; use a larger cluster CIDR or a larger --subnet-size`,
    );
  }
  const etcdEndpoints = values["etcd-endpoints"].split(",").map((s) => s.trim()).filter(Boolean);
  for (const e of etcdEndpoints) {
    if (!/^https?:\/\/[^/]+$/.test(e)) {
      throw new TrellisError("INVALID_ARGUMENT", `--etcd-endpoints: ${JSON.stringify(e)} is not a URL like http://127.0.0.1:2379`);
    }
  }
  if (etcdEndpoints.length === 0) throw new TrellisError("INVALID_ARGUMENT", "--etcd-endpoints is empty");
  if (!values["etcd-prefix"].startsWith("/") || values["etcd-prefix"].endsWith("/")) {
    throw new TrellisError("INVALID_ARGUMENT", `--etcd-prefix ${values["etcd-prefix"]} must start with / and not end with /`);
  }
  return {
    etcdEndpoints,
    etcdPrefix: values["etcd-prefix"],
    listenHost: host,
    listenPort: port,
    clusterCidr,
    subnetPrefixLength,
    logLevel: checkLogLevel(values["log-level"]),
  };
}
