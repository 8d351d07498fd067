import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { identityOfCertificate } from "../../proto/rpc/x509.js";
import { run } from "../support/exec.js";
import { dist } from "../support/lab.js";

// trellis-ca as an operator runs it: the built program, real files, their modes.
const ca = (...args: string[]) => run(process.execPath, [join(dist, "control-plane", "ca", "main.js"), ...args]);
let dir = "";
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "trellis-ca-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe("trellis-ca", () => {
  it("init creates the CA with its key readable by root only, and refuses to overwrite it", async () => {
    const caDir = join(dir, "ca");
    const first = await ca("init", "--dir", caDir);
    expect(first.code, first.stderr).toBe(0);
    expect(await mode(join(caDir, "ca.key"))).toBe(0o600);
    expect(await mode(caDir)).toBe(0o700);
    expect(new X509Certificate(await readFile(join(caDir, "ca.crt"))).ca).toBe(true);
    const again = await ca("init", "--dir", caDir);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/ca\.key exists already; remove it first if you mean to replace it/);
  });

  it("init --admin also writes the first admin's credential, 0600", async () => {
    const caDir = join(dir, "ca-admin");
    const res = await ca("init", "--dir", caDir, "--admin", "alice", "--out", join(dir, "alice"));
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/issued the first admin, alice, for 12 h/);
    expect(await mode(join(dir, "alice", "admin-alice.key"))).toBe(0o600);
    expect(identityOfCertificate(await readFile(join(dir, "alice", "admin-alice.crt"), "utf8"))).toEqual({ kind: "admin", name: "alice" });
  });

  it("issue writes a 0600 key and a certificate for exactly that identity, signed by the CA", async () => {
    const caDir = join(dir, "ca");
    await ca("init", "--dir", caDir);
    const res = await ca("issue", "--dir", caDir, "--kind", "viewer", "--name", "bob", "--out", join(dir, "bob"));
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/issued spiffe:\/\/trellis\/viewer\/bob for 12 h/);
    const pem = await readFile(join(dir, "bob", "viewer-bob.crt"), "utf8");
    expect(await mode(join(dir, "bob", "viewer-bob.key"))).toBe(0o600);
    expect(identityOfCertificate(pem)).toEqual({ kind: "viewer", name: "bob" });
    const caCert = new X509Certificate(await readFile(join(caDir, "ca.crt")));
    expect(new X509Certificate(pem).verify(caCert.publicKey)).toBe(true);
  });

  it("says how to create the CA when there is none, and prints its help", async () => {
    const res = await ca("issue", "--dir", join(dir, "none"), "--kind", "admin", "--name", "a", "--out", dir);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/cannot be read; create the CA with: trellis-ca init --dir/);
    const help = await ca("--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: trellis-ca init/);
  });
});
