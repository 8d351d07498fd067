import { parseArgs } from "node:util";
import { Cidr } from "../proto/common/cidr.js";
import { TrellisError } from "../proto/common/errors.js";

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

const logLevels = ["trace", "debug", "info", "warn", "error", "fatal"];

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
  if (!logLevels.includes(values["log-level"])) {
    throw new TrellisError("INVALID_ARGUMENT", `--log-level ${values["log-level"]} is not one of ${logLevels.join(", ")}`);
  }
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
    logLevel: values["log-level"],
  };
}

type FlagSpec = Record<string, { type: "string"; default: string } | { type: "boolean"; short?: string; default: boolean }>;

function parseFlags<T extends FlagSpec>(argv: readonly string[], options: T) {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new TrellisError("INVALID_ARGUMENT", `${(err as Error).message}; see --help`);
  }
}

export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port > 65535) throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not HOST:PORT`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

export function parseIntFlag(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a whole number from ${min} to ${max}`);
  }
  return n;
}
