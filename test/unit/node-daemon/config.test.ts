import { describe, expect, it } from "vitest";
import { type DaemonConfig, daemonCommand, daemonHelp, parseDaemonArgs } from "../../../node-daemon/config.js";
import { trellisErrorOf } from "../expect-error.js";

const required = ["--node-name", "node-1", "--node-ip", "192.168.56.11"];

function config(argv: string[]): DaemonConfig {
  const c = parseDaemonArgs(argv);
  if (c === "help") throw new Error("expected a config, got help");
  return c;
}

describe("parseDaemonArgs", () => {
  it("the pod MTU follows the uplink unless --mtu is given", () => {
    expect(config(required).mtu).toBeUndefined();
    expect(config([...required, "--mtu", "1450"]).mtu).toBe(1450);
  });

  it("masquerades pod egress unless --no-masquerade", () => {
    expect(config(required).masquerade).toBe(true);
    expect(config([...required, "--no-masquerade"]).masquerade).toBe(false);
  });

  it("has the documented defaults next to the required flags", () => {
    expect(config(required)).toEqual({
      nodeName: "node-1",
      nodeIp: "192.168.56.11",
      controlPlanes: ["127.0.0.1:6443"],
      socketPath: "/run/trellis/cni.sock",
      bridge: "trellis0",
      stateDir: "/var/lib/trellis",
      mtu: undefined,
      masquerade: true,
      heartbeatIntervalMs: 10_000,
      routeResyncIntervalMs: 30_000,
      cniConfDir: "/etc/cni/net.d",
      cniConfName: "10-trellis.conflist",
      cniVersion: "1.0.0",
      logLevel: "info",
      metrics: { host: "127.0.0.1", port: 9464 },
    });
  });

  it.each<[string, { host: string; port: number } | undefined]>([
    ["0.0.0.0:9100", { host: "0.0.0.0", port: 9100 }],
    ["[::1]:9464", { host: "::1", port: 9464 }],
    ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
    ["off", undefined],
    ["", undefined],
  ])("--metrics-address %j serves metrics at %j (undefined: none)", (value, metrics) => {
    expect(config([...required, "--metrics-address", value]).metrics).toEqual(metrics);
  });

  it("the help documents --metrics-address, its loopback default and how to turn it off", () => {
    expect(daemonHelp).toMatch(/--metrics-address A\s+serve Prometheus metrics on HOST:PORT, GET \/metrics/);
    expect(daemonHelp).toMatch(/default 127\.0\.0\.1:9464, loopback only/);
    expect(daemonHelp).toMatch(/"off": none/);
  });

  it.each([["--help"], ["-h"], ["--mtu", "1", "-h"]])("%s returns help, even without the required flags", (...argv) => {
    expect(parseDaemonArgs(argv)).toBe("help");
  });

  it("takes every flag", () => {
    const c = config([
      ...required,
      "--control-plane",
      "10.0.0.1:6443, cp2.example:7443,",
      "--socket",
      "/tmp/t/cni.sock",
      "--bridge",
      "br-pods",
      "--state-dir",
      "/tmp/t/state",
      "--mtu",
      "9000",
      "--heartbeat-interval",
      "2",
      "--route-resync",
      "3600",
      "--cni-conf-dir",
      "/tmp/t/net.d",
      "--cni-conf-name",
      "05-pods.conflist",
      "--log-level",
      "warn",
    ]);
    expect(c).toMatchObject({
      controlPlanes: ["10.0.0.1:6443", "cp2.example:7443"],
      socketPath: "/tmp/t/cni.sock",
      bridge: "br-pods",
      stateDir: "/tmp/t/state",
      mtu: 9000,
      heartbeatIntervalMs: 2_000,
      routeResyncIntervalMs: 3_600_000,
      cniConfDir: "/tmp/t/net.d",
      cniConfName: "05-pods.conflist",
      logLevel: "warn",
    });
  });

  it("an empty --cni-conf-dir turns the conflist off", () => {
    expect(config([...required, "--cni-conf-dir", ""]).cniConfDir).toBe("");
  });

  it.each(["trellis.conflist", "10-trellis_v2.conflist", "a.b.conflist"])("accepts --cni-conf-name %s", (name) => {
    expect(config([...required, "--cni-conf-name", name]).cniConfName).toBe(name);
  });

  it.each<[string, string[]]>([
    ["--node-name", ["--node-ip", "192.168.56.11"]],
    ["--node-name", ["--node-name", "", "--node-ip", "192.168.56.11"]],
    ["--node-ip", ["--node-name", "n1"]],
    ["--node-ip", ["--node-name", "n1", "--node-ip", "300.1.1.1"]],
    ["--node-ip", ["--node-name", "n1", "--node-ip", "192.168.56.11/24"]],
    ["--node-ip", ["--node-name", "n1", "--node-ip", "node-1.example"]],
    ["--control-plane", [...required, "--control-plane", ""]],
    ["--control-plane", [...required, "--control-plane", " , "]],
    ["--control-plane", [...required, "--control-plane", "127.0.0.1"]],
    ["--control-plane", [...required, "--control-plane", "127.0.0.1:6443,cp2:99999"]],
    ["--bridge", [...required, "--bridge", ""]],
    ["--bridge", [...required, "--bridge", "a-bridge-name-too-long"]],
    ["--bridge", [...required, "--bridge", "br/0"]],
    ["--bridge", [...required, "--bridge", "br 0"]],
    ["--bridge", [...required, "--bridge", ".."]],
    ["--socket", [...required, "--socket", "cni.sock"]],
    ["--state-dir", [...required, "--state-dir", "var/lib/trellis"]],
    ["--mtu", [...required, "--mtu", "575"]],
    ["--mtu", [...required, "--mtu", "65536"]],
    ["--mtu", [...required, "--mtu", "jumbo"]],
    ["--heartbeat-interval", [...required, "--heartbeat-interval", "0"]],
    ["--heartbeat-interval", [...required, "--heartbeat-interval", "3601"]],
    ["--heartbeat-interval", [...required, "--heartbeat-interval", "1.5"]],
    ["--route-resync", [...required, "--route-resync", "0"]],
    ["--route-resync", [...required, "--route-resync", "30s"]],
    ["--log-level", [...required, "--log-level", "loud"]],
    ["--cni-conf-dir", [...required, "--cni-conf-dir", "etc/cni/net.d"]],
    ["--cni-conf-dir", [...required, "--cni-conf-dir", "./net.d"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", "10-trellis.conf"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", "10-trellis.json"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", ""]],
    ["--cni-conf-name", [...required, "--cni-conf-name", ".conflist"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", "../10-trellis.conflist"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", "/etc/cni/net.d/10-trellis.conflist"]],
    ["--cni-conf-name", [...required, "--cni-conf-name", "10 trellis.conflist"]],
    ["--cluster-cidr", [...required, "--cluster-cidr", "10.244.0.0/16"]],
    ["--node-name", [...required, "--node-name"]],
    ["--metrics-address", [...required, "--metrics-address", "9464"]],
    ["--metrics-address", [...required, "--metrics-address", "127.0.0.1:99999"]],
    ["--metrics-address", [...required, "--metrics-address", "127.0.0.1:"]],
    ["--metrics-address", [...required, "--metrics-address", "none"]],
  ])("a bad value of %s is INVALID_ARGUMENT naming the flag (%j)", (flag, argv) => {
    const err = trellisErrorOf(() => parseDaemonArgs(argv));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toContain(flag);
  });

  it.each([["576"], ["65535"]])("accepts --mtu %s at the edge of the range", (mtu) => {
    expect(config([...required, "--mtu", mtu]).mtu).toBe(Number(mtu));
  });

  it("talks mutual TLS given the CA: the credential file defaults into the state dir; a token file and join port may be given", () => {
    const base = ["--node-name", "n1", "--node-ip", "192.168.1.11", "--state-dir", "/var/lib/t/"];
    expect(config([...base, "--ca-cert", "/etc/t/ca.crt"]).tls).toEqual({
      caFile: "/etc/t/ca.crt",
      credentialFile: "/var/lib/t/node.pem",
      joinPort: 6444,
    });
    expect(
      config([...base, "--ca-cert", "ca.crt", "--credential", "/etc/t/n1.pem", "--join-token-file", "/etc/t/token", "--join-port", "7444"])
        .tls,
    ).toEqual({ caFile: "ca.crt", credentialFile: "/etc/t/n1.pem", joinTokenFile: "/etc/t/token", joinPort: 7444 });
    expect(config(base).tls).toBeUndefined();
    expect(() => parseDaemonArgs([...base, "--join-token-file", "/etc/t/token"])).toThrow(/need --ca-cert/);
  });

  it("refuses --router: router mode is cluster config an admin sets", () => {
    expect(() => parseDaemonArgs([...required, "--router"])).toThrow(/AdminService.SetRouter/);
  });
});

describe("daemonCommand (stopping is not leaving)", () => {
  it.each([
    [["--node-name", "n"], "run", ["--node-name", "n"]],
    [[], "run", []],
    [["leave", "--node-name", "n"], "leave", ["--node-name", "n"]],
  ] as const)("%j is the %s command with flags %j", (argv, command, flags) => {
    expect(daemonCommand(argv)).toEqual({ command, flags });
  });

  it("an unknown command word is refused by the flag parser, pointing to --help", () => {
    const { flags } = daemonCommand(["lave", ...required]);
    expect(() => parseDaemonArgs(flags)).toThrow(/lave.*see --help/);
  });

  it("the help says SIGTERM keeps the route, and how to leave", () => {
    expect(daemonHelp).toMatch(/trellis-node-daemon leave --node-name NAME/);
    expect(daemonHelp).toMatch(/SIGTERM or SIGINT: stop serving and exit; the node keeps its route/);
    expect(daemonHelp).not.toMatch(/withdraw the node's route from the cluster \(its subnet/);
  });
});

describe("--cni-version (the conflist's cniVersion)", () => {
  it.each(["1.0.0", "1.1.0"])("takes %s", (v) => {
    expect(config([...required, "--cni-version", v]).cniVersion).toBe(v);
  });

  it.each(["0.4.0", "1.2.0", "1.0", "", " 1.0.0"])("refuses %j, naming the versions it writes", (v) => {
    const err = trellisErrorOf(() => parseDaemonArgs([...required, "--cni-version", v]));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toBe(
      `--cni-version ${JSON.stringify(v)} is not a conflist version the daemon writes: give 1.0.0 (the default, for any CNI 1.x runtime) or 1.1.0 (for runtimes whose libcni has STATUS and GC: libcni 1.2 or newer)`,
    );
  });

  it("the help lists the flag and both versions", () => {
    expect(daemonHelp).toMatch(/--cni-version V\s+cniVersion of the conflist: 1\.0\.0 \(default\) or 1\.1\.0/);
  });
});
