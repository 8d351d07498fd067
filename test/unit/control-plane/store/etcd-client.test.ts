import { describe, expect, it } from "vitest";
import { createEtcdClient, type EtcdConnection, explainEtcdFailure } from "../../../../control-plane/store/etcd-client.js";
import { trellisErrorOf } from "../../expect-error.js";

const pem = { ca: "ca", cert: "cert", key: "key" };

describe("createEtcdClient", () => {
  it.each<[string, EtcdConnection, RegExp]>([
    ["no endpoint", { endpoints: [] }, /^no etcd endpoint given$/],
    ["no scheme", { endpoints: ["127.0.0.1:2379"] }, /"127\.0\.0\.1:2379" does not start with http:\/\/ or https:\/\//],
    [
      "https without TLS material",
      { endpoints: ["https://10.0.0.1:2379"] },
      /^etcd endpoint https:\/\/10\.0\.0\.1:2379 is https:\/\/, but no etcd CA, client certificate and key are given: give all three \(--etcd-ca, --etcd-cert, --etcd-key\), or use http:\/\/ endpoints$/,
    ],
    [
      "TLS material with an http endpoint",
      { endpoints: ["https://10.0.0.1:2379", "http://10.0.0.2:2379"], tls: pem },
      /^etcd endpoint http:\/\/10\.0\.0\.2:2379 is cleartext, but an etcd client certificate is given: use https:\/\/ endpoints for etcd with TLS$/,
    ],
    [
      "PEM that is not PEM",
      { endpoints: ["https://10.0.0.1:2379"], tls: pem },
      /^the etcd CA, client certificate and key \(--etcd-ca, --etcd-cert, --etcd-key\) are not usable together: /,
    ],
  ])("%s is INVALID_ARGUMENT saying what to do", (_, connection, message) => {
    const err = trellisErrorOf(() => createEtcdClient(connection));
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(message);
  });

  it("builds a cleartext client for http:// endpoints (it dials lazily)", () => {
    createEtcdClient({ endpoints: ["http://127.0.0.1:1", "http://127.0.0.1:2"], callTimeoutMs: 100 }).close();
  });
});

describe("explainEtcdFailure", () => {
  const grpc = (last: string) =>
    new Error(`14 UNAVAILABLE: No connection established. Last error: ${last} (2026-12-02T08:23:57.260Z). Resolution note: `);
  const tls: EtcdConnection = { endpoints: ["https://127.0.0.1:2379"], tls: pem };
  const plain: EtcdConnection = { endpoints: ["http://127.0.0.1:2379"] };

  it.each<[string, Error, EtcdConnection | undefined, string | undefined]>([
    [
      "a refused client certificate",
      grpc("80:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:rec_layer_s3.c:1601:SSL alert number 42\n"),
      tls,
      "etcd refused this client certificate (--etcd-cert, --etcd-key)",
    ],
    [
      "a refused client certificate, connection unknown",
      grpc("sslv3 alert bad certificate"),
      undefined,
      "etcd refused this client certificate",
    ],
    [
      "a server certificate from another CA",
      grpc("Error: unable to verify the first certificate."),
      tls,
      "does not verify against --etcd-ca",
    ],
    [
      "a server certificate for another host",
      grpc("Error: Hostname/IP does not match certificate's altnames: IP: 10.0.0.9 is not in the cert's list: 127.0.0.1"),
      tls,
      "does not name the endpoint's host",
    ],
    [
      "TLS to a cleartext etcd",
      grpc("Error: Client network socket disconnected before secure TLS connection was established."),
      tls,
      "the etcd endpoint does not speak TLS",
    ],
    [
      "cleartext to a TLS etcd",
      grpc("Failed to connect"),
      plain,
      "if it requires TLS with client certificates (--client-cert-auth), give https://",
    ],
    ["cleartext failure, connection unknown", grpc("Failed to connect"), undefined, undefined],
    ["etcd down", grpc("Error: connect ECONNREFUSED 127.0.0.1:2379."), plain, undefined],
    ["etcd down, over TLS", grpc("Error: connect ECONNREFUSED 127.0.0.1:2379."), tls, undefined],
  ])("%s", (_, err, connection, hint) => {
    const text = explainEtcdFailure(err, connection);
    expect(text).not.toMatch(/Resolution note|2026-12-02|\n/);
    if (hint === undefined) expect(text).toMatch(/^14 UNAVAILABLE: No connection established\. Last error: /);
    else {
      expect(text).toContain(hint);
      expect(text).toMatch(/ \(14 UNAVAILABLE: No connection established\. Last error: .*\)$/);
    }
  });
});
