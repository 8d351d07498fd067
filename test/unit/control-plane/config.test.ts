import { describe, expect, it } from "vitest";
import { type ControlPlaneConfig, controlPlaneHelp, parseControlPlaneArgs } from "../../../control-plane/config.js";
import { trellisErrorOf } from "../expect-error.js";

/** Parses `argv`, cleartext on loopback unless it says otherwise (the TLS flags or a --listen). */
function config(argv: string[]): ControlPlaneConfig {
  const c = parseControlPlaneArgs(argv.includes("--tls-cert") ? argv : [...argv, "--insecure-plaintext"]);
  if (c === "help") throw new Error("expected a config, got help");
  return c;
}

describe("parseControlPlaneArgs", () => {
  it("has the documented defaults", () => {
    const c = config([]);
    expect({ ...c, clusterCidr: c.clusterCidr.toString() }).toEqual({
      etcdEndpoints: ["http://127.0.0.1:2379"],
      etcdPrefix: "/trellis/v1",
      listenHost: "127.0.0.1",
      listenPort: 6443,
      clusterCidr: "10.244.0.0/16",
      subnetPrefixLength: 24,
      logLevel: "info",
      policy: { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 },
      joinPort: 6444,
      nodeCertificateLifetimeS: 168 * 3600,
      etcdHistory: 100_000,
      metrics: { host: "127.0.0.1", port: 9465 },
    });
  });

  it("serves metrics on --metrics-address (a free port with 0), or none with off", () => {
    expect(config(["--metrics-address", "10.0.0.5:9100"]).metrics).toEqual({ host: "10.0.0.5", port: 9100 });
    expect(config(["--metrics-address", "127.0.0.1:0"]).metrics).toEqual({ host: "127.0.0.1", port: 0 });
    expect(config(["--metrics-address", "off"]).metrics).toBeUndefined();
    expect(() => parseControlPlaneArgs(["--insecure-plaintext", "--metrics-address", "9465"])).toThrow(
      /--metrics-address "9465" is not HOST:PORT \(e\.g\. 127\.0\.0\.1:9464\) or "off"/,
    );
    expect(controlPlaneHelp).toMatch(
      /--metrics-address A\s+serve Prometheus metrics on HOST:PORT[\s\S]*default 127\.0\.0\.1:9465, loopback only/,
    );
  });

  it("signs node certificates with --ca-key, which needs TLS; takes the join port and the node certificate lifetime", () => {
    const tls = ["--tls-cert", "cp.crt", "--tls-key", "cp.key", "--client-ca", "ca.crt"];
    expect(config([...tls, "--ca-key", "ca.key", "--join-port", "0", "--node-cert-hours", "24"])).toMatchObject({
      caKeyFile: "ca.key",
      joinPort: 0,
      nodeCertificateLifetimeS: 86_400,
    });
    expect(() => parseControlPlaneArgs(["--insecure-plaintext", "--ca-key", "ca.key"])).toThrow(/--ca-key needs TLS/);
    expect(() => parseControlPlaneArgs(["--insecure-plaintext", "--node-cert-hours", "0"])).toThrow(/--node-cert-hours/);
  });

  it("takes the lease lifecycle flags", () => {
    const c = config(["--lease-ttl", "12", "--grace-period", "0", "--disruption-share", "0.5"]);
    expect(c.policy).toEqual({ ttlMs: 12_000, graceMs: 0, disruptionShare: 0.5 });
    expect(config(["--lease-ttl", "60", "--heartbeat-interval", "20"]).policy.heartbeatIntervalMs).toBe(20_000);
  });

  it("refuses a heartbeat interval over half the TTL: a node would look quiet between two heartbeats", () => {
    expect(() => parseControlPlaneArgs(["--lease-ttl", "40", "--heartbeat-interval", "21"])).toThrow(
      /--heartbeat-interval 21 is more than half of --lease-ttl 40/,
    );
  });

  it.each([
    ["--lease-ttl", "0"],
    ["--lease-ttl", "1.5"],
    ["--grace-period", "-1"],
    ["--disruption-share", "1"],
    ["--disruption-share", "0"],
    ["--disruption-share", "a third"],
    ["--heartbeat-interval", "0"],
  ])("rejects %s %s naming the flag", (flag, value) => {
    expect(() => parseControlPlaneArgs([flag, value])).toThrow(flag);
  });

  it.each([["--help"], ["-h"], ["--listen", "bogus", "--help"]])("%s returns help", (...argv) => {
    expect(parseControlPlaneArgs(argv)).toBe("help");
  });

  it("takes every flag", () => {
    const c = config([
      "--etcd-endpoints",
      " https://10.0.0.1:2379, https://etcd.example:2379 ,",
      "--etcd-ca",
      "etcd-ca.crt",
      "--etcd-cert",
      "etcd-client.crt",
      "--etcd-key",
      "etcd-client.key",
      "--etcd-prefix",
      "/test/abc",
      "--listen",
      "0.0.0.0:0",
      "--cluster-cidr",
      "10.100.0.0/14",
      "--subnet-size",
      "26",
      "--log-level",
      "debug",
      "--tls-cert",
      "cp.crt",
      "--tls-key",
      "cp.key",
      "--client-ca",
      "ca.crt",
    ]);
    expect(c.etcdEndpoints).toEqual(["https://10.0.0.1:2379", "https://etcd.example:2379"]);
    expect(c.etcdTls).toEqual({ caFile: "etcd-ca.crt", certFile: "etcd-client.crt", keyFile: "etcd-client.key" });
    expect(c.etcdPrefix).toBe("/test/abc");
    expect([c.listenHost, c.listenPort]).toEqual(["0.0.0.0", 0]);
    expect(c.clusterCidr.toString()).toBe("10.100.0.0/14");
    expect(c.subnetPrefixLength).toBe(26);
    expect(c.logLevel).toBe("debug");
  });

  it("takes an IPv6 listen address in brackets", () => {
    const c = config(["--listen", "[::1]:7000"]);
    expect([c.listenHost, c.listenPort]).toEqual(["::1", 7000]);
  });

  it("accepts a cluster CIDR exactly one subnet large", () => {
    expect(config(["--cluster-cidr", "10.244.0.0/24", "--subnet-size", "24"]).subnetPrefixLength).toBe(24);
  });

  it.each<[string, string[]]>([
    ["--listen", ["--listen", "6443"]],
    ["--listen", ["--listen", "localhost:"]],
    ["--listen", ["--listen", ":6443"]],
    ["--listen", ["--listen", "localhost:65536"]],
    ["--listen", ["--listen", "localhost:http"]],
    ["--listen", ["--listen"]],
    ["--subnet-size", ["--subnet-size", "abc"]],
    ["--subnet-size", ["--subnet-size", "0"]],
    ["--subnet-size", ["--subnet-size", "31"]],
    ["--subnet-size", ["--subnet-size", "24.5"]],
    ["--subnet-size", ["--subnet-size", "-1"]],
    ["--cluster-cidr", ["--cluster-cidr", "banana"]],
    ["--cluster-cidr", ["--cluster-cidr", "10.244.0.0"]],
    ["--cluster-cidr", ["--cluster-cidr", "10.244.1.0/16"]],
    ["--cluster-cidr", ["--cluster-cidr", "10.244.0.0/40"]],
    ["--etcd-endpoints", ["--etcd-endpoints", "127.0.0.1:2379"]],
    ["--etcd-endpoints", ["--etcd-endpoints", "ftp://127.0.0.1:2379"]],
    ["--etcd-endpoints", ["--etcd-endpoints", "http://127.0.0.1:2379/v3"]],
    ["--etcd-endpoints", ["--etcd-endpoints", ""]],
    ["--etcd-endpoints", ["--etcd-endpoints", " , "]],
    ["--etcd-prefix", ["--etcd-prefix", "trellis"]],
    ["--etcd-prefix", ["--etcd-prefix", "/trellis/"]],
    ["--etcd-prefix", ["--etcd-prefix", "/"]],
    ["--log-level", ["--log-level", "verbose"]],
    ["--log-level", ["--log-level", "INFO"]],
    ["--bogus", ["--bogus"]],
    ["--bogus", ["--bogus", "1"]],
    ["--help", ["--help=yes"]],
  ])("a bad value of %s is INVALID_ARGUMENT naming the flag (%j)", (flag, argv) => {
    const err = trellisErrorOf(() => parseControlPlaneArgs(argv));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(flag);
  });

  it("refuses positional arguments", () => {
    expect(trellisErrorOf(() => parseControlPlaneArgs(["serve"])).reason).toBe("INVALID_ARGUMENT");
  });

  it.each([
    ["10.244.0.0/25", "24"],
    ["10.244.0.0/16", "8"],
    ["10.0.0.0/30", "29"],
  ])("a cluster CIDR %s smaller than one /%s subnet names both flags", (cluster, size) => {
    const err = trellisErrorOf(() => parseControlPlaneArgs(["--cluster-cidr", cluster, "--subnet-size", size]));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(`--cluster-cidr ${cluster}`);
    expect(err.message).toContain(`/${size}`);
    expect(err.message).toContain("--subnet-size");
  });

  it("takes the three TLS files together, or none (cleartext)", () => {
    const config = parseControlPlaneArgs(["--tls-cert", "cp.crt", "--tls-key", "cp.key", "--client-ca", "ca.crt"]);
    expect(config !== "help" && config.tls).toEqual({ certFile: "cp.crt", keyFile: "cp.key", clientCaFile: "ca.crt" });
    const plain = parseControlPlaneArgs(["--insecure-plaintext"]);
    expect(plain !== "help" && plain.tls).toBeUndefined();
    expect(() => parseControlPlaneArgs(["--tls-cert", "cp.crt"])).toThrow(/--tls-cert, --tls-key and --client-ca go together/);
  });

  describe("etcd client certificates", () => {
    const etcdTls = ["--etcd-ca", "etcd-ca.crt", "--etcd-cert", "etcd.crt", "--etcd-key", "etcd.key"];

    it("dials etcd in cleartext without the flags, with TLS and these files with all three", () => {
      expect(config([]).etcdTls).toBeUndefined();
      const c = config(["--etcd-endpoints", "https://10.0.0.1:2379,https://10.0.0.2:2379", ...etcdTls]);
      expect(c.etcdTls).toEqual({ caFile: "etcd-ca.crt", certFile: "etcd.crt", keyFile: "etcd.key" });
      expect(c.etcdEndpoints).toEqual(["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
    });

    it.each([
      [["--etcd-ca", "ca.crt"]],
      [["--etcd-cert", "etcd.crt", "--etcd-key", "etcd.key"]],
      [["--etcd-ca", "ca.crt", "--etcd-key", "etcd.key"]],
      [["--etcd-ca", "", "--etcd-cert", "etcd.crt", "--etcd-key", "etcd.key"]],
    ])("wants all three or none (%j)", (flags) => {
      const err = trellisErrorOf(() => config(["--etcd-endpoints", "https://10.0.0.1:2379", ...flags]));
      expect(err.reason).toBe("INVALID_ARGUMENT");
      expect(err.message).toBe("--etcd-ca, --etcd-cert and --etcd-key go together: give all three, or none for cleartext to etcd");
    });

    it.each([["https://10.0.0.1:2379"], ["http://10.0.0.1:2379,https://10.0.0.2:2379"]])(
      "an https:// endpoint (%s) without them says to give the three flags",
      (endpoints) => {
        const err = trellisErrorOf(() => config(["--etcd-endpoints", endpoints]));
        expect(err.reason).toBe("INVALID_ARGUMENT");
        expect(err.message).toContain("--etcd-endpoints: https://10.0.0.");
        expect(err.message).toContain("give --etcd-ca, --etcd-cert and --etcd-key");
      },
    );

    it.each([["http://10.0.0.1:2379"], ["https://10.0.0.1:2379,http://10.0.0.2:2379"], [undefined]])(
      "with them, an http:// endpoint (%s) is refused: they need https://",
      (endpoints) => {
        const err = trellisErrorOf(() => config([...(endpoints ? ["--etcd-endpoints", endpoints] : []), ...etcdTls]));
        expect(err.reason).toBe("INVALID_ARGUMENT");
        expect(err.message).toMatch(
          /^--etcd-endpoints: http:\/\/.* is cleartext, but --etcd-ca, --etcd-cert and --etcd-key are given: use https:\/\/ endpoints$/,
        );
      },
    );

    it("are in the help", () => {
      for (const flag of ["--etcd-ca FILE", "--etcd-cert FILE", "--etcd-key FILE", "--client-cert-auth"]) {
        expect(controlPlaneHelp).toContain(flag);
      }
    });
  });

  it("refuses to serve cleartext unless told so plainly, and then on loopback only", () => {
    expect(() => parseControlPlaneArgs([])).toThrow(
      /serves mutual TLS only: give --tls-cert, --tls-key and --client-ca .* or --insecure-plaintext/,
    );
    expect(() => parseControlPlaneArgs(["--insecure-plaintext", "--listen", "0.0.0.0:6443"])).toThrow(
      /--insecure-plaintext serves on loopback only; --listen 0\.0\.0\.0:6443 is not a loopback address/,
    );
    for (const listen of ["127.0.0.1:6443", "127.1.2.3:0", "localhost:6443", "[::1]:6443"]) {
      expect(parseControlPlaneArgs(["--insecure-plaintext", "--listen", listen])).not.toBe("help");
    }
  });
});
