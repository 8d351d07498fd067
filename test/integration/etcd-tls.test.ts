// etcd with client certificates (DESIGN.md §6, issue 9 point 5): the store and the control-plane binary
// against an etcd started with --client-cert-auth, and what a wrong or missing certificate looks like.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EtcdStoreOptions } from "../../control-plane/store/etcd-context.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { TrellisError } from "../../proto/core/errors.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { SubnetReservationRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";
import { createCertificateAuthority } from "../../proto/rpc/x509.js";
import { namespace, spawnControlPlane } from "../support/control-plane.js";
import { type EtcdHandle, type EtcdTls, freePort, type PemPair, startEtcd, writeIssued } from "../support/etcd.js";
import { run } from "../support/exec.js";
import { dist } from "../support/lab.js";
import { waitForLog } from "../support/wait.js";

let etcd: EtcdHandle;
let tls: EtcdTls;
let dir: string;
/** A client certificate for the same identity, signed by a CA etcd does not trust. */
let stranger: PemPair;
let strangerCa: string;

beforeAll(async () => {
  etcd = await startEtcd({ tls: true });
  if (!etcd.tls) throw new Error("startEtcd({ tls: true }) returned no TLS material");
  tls = etcd.tls;
  dir = await mkdtemp(join(tmpdir(), "trellis-etcd-tls-"));
  const other = await createCertificateAuthority("trellis-test-other-ca", 1);
  strangerCa = other.certificatePem;
  stranger = await writeIssued(other, dir, "stranger", { kind: "control-plane", name: "trellis-control-plane" });
});
afterAll(async () => {
  await etcd?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs `fn` on a store made with `options`; returns the TrellisError it fails with. */
async function failureOf(options: EtcdStoreOptions, fn: (s: EtcdStores) => Promise<unknown>): Promise<TrellisError> {
  const store = openEtcdStores(options);
  try {
    await fn(store);
  } catch (err) {
    expect(err).toBeInstanceOf(TrellisError);
    return err as TrellisError;
  } finally {
    store.close();
  }
  throw new Error("expected the etcd call to fail");
}

const reservation = (subnet: string) => create(SubnetReservationRecordSchema, { subnet, nodeName: "n1", createdAtMs: 1n });
const plainEndpoint = () => etcd.endpoint.replace(/^https:/, "http:");

describe("etcd with client certificates (--client-cert-auth)", () => {
  it("the test etcd really asks for a client certificate: etcdctl without one is refused", async () => {
    const env = { ...process.env, ETCDCTL_API: "3" };
    const ctl = (...args: string[]) =>
      run("etcdctl", ["--endpoints", etcd.endpoint, "--dial-timeout", "1s", "--command-timeout", "2s", ...args, "get", "x"], { env });
    expect((await ctl("--cacert", tls.caFile, "--cert", tls.client.certFile, "--key", tls.client.keyFile)).code).toBe(0);
    expect((await ctl("--cacert", tls.caFile)).code).not.toBe(0);
  });

  it("the store with the client certificate reads and writes", async () => {
    const store = openEtcdStores({ endpoints: [etcd.endpoint], root: namespace(), tls: tls.connection });
    try {
      expect(await store.subnets.createReservation(reservation("10.244.7.0/24"))).toBe(true);
      expect(await store.subnets.createReservation(reservation("10.244.7.0/24"))).toBe(false);
      expect((await store.subnets.listReservations()).map((r) => [r.subnet, r.nodeName])).toEqual([["10.244.7.0/24", "n1"]]);
      await store.subnets.deleteReservation("10.244.7.0/24");
      expect(await store.subnets.listReservations()).toEqual([]);
    } finally {
      store.close();
    }
  });

  it("without a client certificate (cleartext to the TLS port) calls fail UNAVAILABLE and say to give the flags", async () => {
    const err = await failureOf({ endpoints: [plainEndpoint()], root: namespace() }, (s) => s.subnets.listReservations());
    expect(err.reason).toBe("UNAVAILABLE");
    expect(err.message).toMatch(/^etcd: could not list reservations: etcd does not answer cleartext gRPC here: /);
    expect(err.message).toContain("give https:// endpoints and --etcd-ca, --etcd-cert and --etcd-key");
  });

  it("a client certificate from another CA is refused: UNAVAILABLE naming --etcd-cert", async () => {
    const err = await failureOf(
      { endpoints: [etcd.endpoint], root: namespace(), tls: { ca: tls.ca, cert: stranger.cert, key: stranger.key } },
      (s) => s.subnets.createReservation(reservation("10.244.8.0/24")),
    );
    expect(err.reason).toBe("UNAVAILABLE");
    expect(err.message).toMatch(
      /^etcd: could not reserve 10\.244\.8\.0\/24: etcd refused this client certificate \(--etcd-cert, --etcd-key\)/,
    );
    expect(err.message).toContain("bad certificate");
  });

  it("an --etcd-ca that did not sign etcd's serving certificate: UNAVAILABLE naming --etcd-ca", async () => {
    const err = await failureOf(
      { endpoints: [etcd.endpoint], root: namespace(), tls: { ca: strangerCa, cert: tls.client.cert, key: tls.client.key } },
      (s) => s.subnets.listReservations(),
    );
    expect(err.reason).toBe("UNAVAILABLE");
    expect(err.message).toContain("etcd's serving certificate does not verify against --etcd-ca");
  });

  it("TLS material and endpoint schemes that disagree, or a key that is not the certificate's, are INVALID_ARGUMENT at once", () => {
    const make = (options: EtcdStoreOptions) => () => openEtcdStores(options);
    expect(make({ endpoints: [etcd.endpoint] })).toThrow(
      /etcd endpoint https:\/\/127\.0\.0\.1:\d+ is https:\/\/, but no etcd CA, client certificate and key are given: give all three \(--etcd-ca, --etcd-cert, --etcd-key\)/,
    );
    expect(make({ endpoints: [plainEndpoint()], tls: tls.connection })).toThrow(
      /is cleartext, but an etcd client certificate is given: use https:\/\//,
    );
    expect(make({ endpoints: [etcd.endpoint], tls: { ...tls.connection, key: stranger.key } })).toThrow(
      /the etcd CA, client certificate and key \(--etcd-ca, --etcd-cert, --etcd-key\) are not usable together: .*key values mismatch/,
    );
    for (const options of [{ endpoints: [etcd.endpoint] }, { endpoints: [] }, { endpoints: ["127.0.0.1:2379"] }]) {
      try {
        make(options)();
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(TrellisError);
        expect((err as TrellisError).reason).toBe("INVALID_ARGUMENT");
      }
    }
  });

  it("the control-plane binary with --etcd-ca, --etcd-cert and --etcd-key starts and serves SERVING", async () => {
    const replica = await spawnControlPlane({
      etcd: [etcd.endpoint],
      root: namespace(),
      args: ["--etcd-ca", tls.caFile, "--etcd-cert", tls.client.certFile, "--etcd-key", tls.client.keyFile],
    });
    try {
      const health = createClient(Health, replica.viewerTransport());
      expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      await replica.destroy();
    }
  });

  it("the binary with a certificate etcd does not trust stays unready and logs why", async () => {
    const logFile = join(dir, "refused.log");
    const port = await freePort();
    const fd = openSync(logFile, "w");
    const child = spawn(
      process.execPath,
      [
        join(dist, "control-plane", "main.js"),
        ...["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", namespace(), "--listen", `127.0.0.1:${port}`],
        ...["--insecure-plaintext", "--etcd-ca", tls.caFile, "--etcd-cert", stranger.certFile, "--etcd-key", stranger.keyFile],
        ...["--metrics-address", "127.0.0.1:0"],
      ],
      { stdio: ["ignore", fd, fd] },
    );
    closeSync(fd);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    try {
      const line = await waitForLog(logFile, "etcd not reachable yet, retrying", 10_000);
      // Which store's call fails first is main.ts's business; the stores' message is checked above.
      expect((line.err as { message?: string } | undefined)?.message).toMatch(/^etcd: could not .*alert bad certificate/);
      const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
      expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
      expect(await readFile(logFile, "utf8")).not.toContain("PRIVATE KEY");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });

  it("the binary refuses https:// endpoints without the flags, and unreadable files, naming the flag", async () => {
    const start = (...args: string[]) =>
      run(process.execPath, [
        ...[join(dist, "control-plane", "main.js"), "--insecure-plaintext", "--listen", "127.0.0.1:0"],
        ...["--metrics-address", "127.0.0.1:0", ...args],
      ]);
    const noFlags = await start("--etcd-endpoints", etcd.endpoint);
    expect(noFlags.code).toBe(2);
    expect(noFlags.stderr).toContain("give --etcd-ca, --etcd-cert and --etcd-key");
    const missing = await start(
      ...["--etcd-endpoints", etcd.endpoint, "--etcd-ca", join(dir, "nope.crt"), "--etcd-cert", tls.client.certFile],
      ...["--etcd-key", tls.client.keyFile],
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`--etcd-ca ${join(dir, "nope.crt")} cannot be read`);
  });
});
