import { Cidr } from "../proto/core/cidr.js";
import { TrellisError } from "../proto/core/errors.js";
import { checkLogLevel, parseFlags, parseHostPort, parseIntFlag, parseMetricsAddress } from "../proto/core/flags.js";
import type { ExpiryPolicy } from "./nodes/expiry-plan.js";

export interface ControlPlaneConfig {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  /** Files of etcd's CA and of this replica's etcd client certificate and key; undefined dials etcd in cleartext. */
  readonly etcdTls?: { readonly caFile: string; readonly certFile: string; readonly keyFile: string };
  readonly listenHost: string;
  readonly listenPort: number;
  readonly clusterCidr: Cidr;
  readonly subnetPrefixLength: number;
  readonly logLevel: string;
  readonly policy: ExpiryPolicy;
  /** Files of the serving certificate, its key and the cluster CA: mutual TLS; undefined serves cleartext. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string };
  /** The cluster CA's key: this replica signs node certificates (Join, renewal). */
  readonly caKeyFile?: string;
  /** Revisions of etcd history kept when compacting (every 5 minutes); 0: never compact. */
  readonly etcdHistory: number;
  /** Port of the join listener (server-only TLS, JoinService alone) on the --listen host. */
  readonly joinPort: number;
  /** Lifetime of the node certificates this replica issues. */
  readonly nodeCertificateLifetimeS: number;
  /** Where to serve metrics over HTTP (--metrics-address); undefined: no metrics listener. */
  readonly metrics?: { readonly host: string; readonly port: number };
}

export const controlPlaneHelp = `Usage: trellis-control-plane [flags]

The Trellis control plane: leases each node a pod subnet of the cluster CIDR, streams the cluster's
host-gw routes to every node daemon, and serves the admin API (gRPC, with server reflection and
grpc.health.v1). All state lives in etcd; any number of replicas may share one etcd.

Flags:
  --etcd-endpoints URLS     comma-separated etcd client URLs (default http://127.0.0.1:2379): http:// without
                            the --etcd-* TLS flags, https:// with them
  --etcd-prefix PREFIX      key prefix in etcd (default /trellis/v1)
  --etcd-history N          every 5 minutes, compact etcd's history to the last N revisions, so that it
                            does not fill etcd's space quota (default 100000; 0: never, when etcd runs
                            with its own --auto-compaction-retention)
  --etcd-ca FILE            the CA certificate that etcd's serving certificate is checked against
  --etcd-cert FILE          this replica's client certificate for etcd; for an etcd started with
                            --client-cert-auth, signed by a CA in its --trusted-ca-file, with client auth usage
  --etcd-key FILE           its private key. Give all three (and https:// endpoints) or none (cleartext to etcd)
  --listen HOST:PORT        where to serve gRPC (default 127.0.0.1:6443; port 0 picks a free one)
  --cluster-cidr CIDR       the pod network, split into node subnets (default 10.244.0.0/16)
  --subnet-size N           prefix length of each node's subnet (default 24). The first replica stores both
                            in etcd; a replica started with others refuses to start
  --lease-ttl S             a node that has not heartbeated for S seconds loses its route (default 40)
  --grace-period S          a node that lost its route keeps its subnet S more seconds, and gets it back
                            when it returns within them (default 600)
  --heartbeat-interval S    how often the node daemons heartbeat (their --heartbeat-interval): a node that
                            missed one counts as quiet (default: a quarter of --lease-ttl; at most half of it)
  --disruption-share F      when more than this share of live nodes (and at least 2) go quiet within one
                            heartbeat interval plus the TTL, routes are kept (disruption mode) until
                            heartbeats are back (default 0.33)
  --tls-cert FILE           this replica's certificate (trellis-ca issue --kind control-plane)
  --tls-key FILE            its private key
  --client-ca FILE          the cluster CA certificate: every caller must present a certificate it signed;
                            a node may then act only for the node its certificate names, and the admin API
                            needs an admin (or, to read, a viewer) certificate. Give all three or none.
  --ca-key FILE             the cluster CA's private key (trellis-ca init's ca.key, mode 0600): this replica
                            signs node certificates, for join tokens (JoinService) and renewals. Replicas
                            without it refuse both; at least one replica needs it
  --join-port N             port of the join listener on the --listen host: TLS with this replica's
                            certificate, no client certificate, JoinService only (default 6444; 0 picks a
                            free one). Served only with --ca-key
  --node-cert-hours N       lifetime of node certificates; daemons renew at 70-90% of it (default 168)
  --insecure-plaintext      serve cleartext instead, identifying nobody (anyone who can connect may act for
                            any node and administer the cluster): for a lab, and only on a loopback --listen
  --metrics-address A       serve Prometheus metrics on HOST:PORT, GET /metrics, plain HTTP without
                            authentication (default 127.0.0.1:9465, loopback only; port 0 picks a free one;
                            "off": none). A port in use stops the replica at start-up, before it serves
  --log-level LEVEL         trace, debug, info, warn or error (default info)
  -h, --help                print this help and exit

It refuses to start with neither the three TLS flags nor --insecure-plaintext.
`;

/** 127.0.0.0/8, ::1 and localhost. */
export const isLoopback = (host: string) => host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);

/** Parses flags; throws INVALID_ARGUMENT naming the flag. Returns "help" for --help. Pure. */
export function parseControlPlaneArgs(argv: readonly string[]): ControlPlaneConfig | "help" {
  const { values } = parseFlags(argv, {
    "etcd-endpoints": { type: "string", default: "http://127.0.0.1:2379" },
    "etcd-prefix": { type: "string", default: "/trellis/v1" },
    "etcd-ca": { type: "string", default: "" },
    "etcd-cert": { type: "string", default: "" },
    "etcd-key": { type: "string", default: "" },
    listen: { type: "string", default: "127.0.0.1:6443" },
    "cluster-cidr": { type: "string", default: "10.244.0.0/16" },
    "subnet-size": { type: "string", default: "24" },
    "log-level": { type: "string", default: "info" },
    "lease-ttl": { type: "string", default: "40" },
    "grace-period": { type: "string", default: "600" },
    "disruption-share": { type: "string", default: "0.33" },
    "heartbeat-interval": { type: "string", default: "" },
    "tls-cert": { type: "string", default: "" },
    "tls-key": { type: "string", default: "" },
    "client-ca": { type: "string", default: "" },
    "insecure-plaintext": { type: "boolean", default: false },
    "ca-key": { type: "string", default: "" },
    "join-port": { type: "string", default: "6444" },
    "etcd-history": { type: "string", default: "100000" },
    "node-cert-hours": { type: "string", default: "168" },
    "metrics-address": { type: "string", default: "127.0.0.1:9465" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  const { host, port } = parseHostPort(values.listen, "--listen");
  const share = Number(values["disruption-share"]);
  if (!/^\d*\.?\d+$/.test(values["disruption-share"]) || share <= 0 || share >= 1) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--disruption-share ${JSON.stringify(values["disruption-share"])} is not a number between 0 and 1`,
    );
  }
  let policy: ExpiryPolicy = {
    ttlMs: parseIntFlag(values["lease-ttl"], "--lease-ttl", 1, 86_400) * 1000,
    graceMs: parseIntFlag(values["grace-period"], "--grace-period", 0, 30 * 86_400) * 1000,
    disruptionShare: share,
  };
  if (values["heartbeat-interval"] !== "") {
    const intervalS = parseIntFlag(values["heartbeat-interval"], "--heartbeat-interval", 1, 3600);
    if (intervalS * 2000 > policy.ttlMs) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `--heartbeat-interval ${intervalS} is more than half of --lease-ttl ${policy.ttlMs / 1000}: a node would look quiet between two heartbeats; give a longer --lease-ttl or a shorter interval (and the same to the daemons)`,
      );
    }
    policy = { ...policy, heartbeatIntervalMs: intervalS * 1000 };
  }
  const subnetPrefixLength = parseIntFlag(values["subnet-size"], "--subnet-size", 1, 30);
  const clusterCidr = Cidr.parse(values["cluster-cidr"], "--cluster-cidr");
  if (clusterCidr.subnetCount(subnetPrefixLength) === 0n) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--cluster-cidr ${clusterCidr.toString()} is smaller than one /${subnetPrefixLength} node subnet; use a larger cluster CIDR or a larger --subnet-size`,
    );
  }
  const etcdEndpoints = values["etcd-endpoints"]
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const e of etcdEndpoints) {
    if (!/^https?:\/\/[^/]+$/.test(e)) {
      throw new TrellisError("INVALID_ARGUMENT", `--etcd-endpoints: ${JSON.stringify(e)} is not a URL like http://127.0.0.1:2379`);
    }
  }
  if (etcdEndpoints.length === 0) throw new TrellisError("INVALID_ARGUMENT", "--etcd-endpoints is empty");
  const etcdTlsFiles = [values["etcd-ca"], values["etcd-cert"], values["etcd-key"]];
  if (etcdTlsFiles.some(Boolean) && !etcdTlsFiles.every(Boolean)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      "--etcd-ca, --etcd-cert and --etcd-key go together: give all three, or none for cleartext to etcd",
    );
  }
  const etcdTls = values["etcd-ca"] !== "";
  for (const e of etcdEndpoints) {
    if (etcdTls && e.startsWith("http://")) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `--etcd-endpoints: ${e} is cleartext, but --etcd-ca, --etcd-cert and --etcd-key are given: use https:// endpoints`,
      );
    }
    if (!etcdTls && e.startsWith("https://")) {
      throw new TrellisError(
        "INVALID_ARGUMENT",
        `--etcd-endpoints: ${e} is https://: give --etcd-ca, --etcd-cert and --etcd-key (etcd's CA, this replica's client certificate and key), or use http:// endpoints`,
      );
    }
  }
  if (!values["etcd-prefix"].startsWith("/") || values["etcd-prefix"].endsWith("/")) {
    throw new TrellisError("INVALID_ARGUMENT", `--etcd-prefix ${values["etcd-prefix"]} must start with / and not end with /`);
  }
  const tlsFiles = [values["tls-cert"], values["tls-key"], values["client-ca"]];
  if (tlsFiles.some(Boolean) && !tlsFiles.every(Boolean)) {
    throw new TrellisError("INVALID_ARGUMENT", "--tls-cert, --tls-key and --client-ca go together: give all three, or none for cleartext");
  }
  const logLevel = checkLogLevel(values["log-level"]);
  const insecure = values["insecure-plaintext"];
  if (values["tls-cert"] && insecure)
    throw new TrellisError("INVALID_ARGUMENT", "--insecure-plaintext and the TLS flags exclude each other");
  if (!values["tls-cert"] && !insecure) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      "the control plane serves mutual TLS only: give --tls-cert, --tls-key and --client-ca (make them with trellis-ca), or --insecure-plaintext for a lab on loopback",
    );
  }
  if (insecure && !isLoopback(host)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `--insecure-plaintext serves on loopback only; --listen ${values.listen} is not a loopback address`,
    );
  }
  if (values["ca-key"] && !values["tls-cert"]) {
    throw new TrellisError("INVALID_ARGUMENT", "--ca-key needs TLS: give --tls-cert, --tls-key and --client-ca too");
  }
  const metrics = parseMetricsAddress(values["metrics-address"], "--metrics-address");
  return {
    ...(metrics ? { metrics } : {}),
    ...(values["ca-key"] ? { caKeyFile: values["ca-key"] } : {}),
    joinPort: parseIntFlag(values["join-port"], "--join-port", 0, 65535),
    etcdHistory: parseIntFlag(values["etcd-history"], "--etcd-history", 0, 1_000_000_000),
    nodeCertificateLifetimeS: parseIntFlag(values["node-cert-hours"], "--node-cert-hours", 1, 24 * 400) * 3600,
    ...(values["tls-cert"] ? { tls: { certFile: values["tls-cert"], keyFile: values["tls-key"], clientCaFile: values["client-ca"] } } : {}),
    etcdEndpoints,
    etcdPrefix: values["etcd-prefix"],
    ...(etcdTls ? { etcdTls: { caFile: values["etcd-ca"], certFile: values["etcd-cert"], keyFile: values["etcd-key"] } } : {}),
    listenHost: host,
    listenPort: port,
    clusterCidr,
    subnetPrefixLength,
    logLevel,
    policy,
  };
}
