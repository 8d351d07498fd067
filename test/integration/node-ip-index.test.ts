import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Registrar } from "../../control-plane/nodes/registrar.js";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import type { Stores } from "../../control-plane/store/stores.js";
import { createSubnetPool } from "../../control-plane/subnets/subnet-pool.js";
import { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";
import { namespace, replicaServices } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

// Issue 10, finding 8: "two live nodes can share an IP". The node-ips index is the authority on who holds
// an underlay address: it is checked inside the claim and update transactions, and only its own node's
// entry is ever deleted. Against a real etcd, since the bug lives in the transactions; the interleavings
// are forced by holding one registration's write until the other registration is done.
let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

let store: EtcdStores | undefined;
afterEach(async () => {
  store?.close();
  store = undefined;
});

const pool = createSubnetPool(Cidr.parse("10.244.0.0/16"), 24);
const policy = { ttlMs: 40_000, graceMs: 600_000, disruptionShare: 0.33 };

/** A replica's lease manager over `over` (each call is a separate replica as far as etcd can tell). */
function replica(over: Stores): Registrar {
  return replicaServices(over, { pool, policy }).registrar;
}

let root = "";
function openStore(): EtcdStores {
  root = namespace();
  store = openEtcdStores({ endpoints: [etcd.endpoint], root });
  return store;
}

/**
 * `inner` with the first call of `method` whose first argument is `nodeName`'s record held back until
 * `release()`: `reached` resolves when that call has been made (its reads are done, its write not sent).
 */
function holdWrite(inner: Stores, method: "claimSubnet" | "updateNode", nodeName: string) {
  let reached!: () => void;
  let open!: () => void;
  const reachedP = new Promise<void>((r) => {
    reached = r;
  });
  const gate = new Promise<void>((r) => {
    open = r;
  });
  let held = false;
  const nodes = new Proxy(inner.nodes, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== "function") return value;
      if (prop !== method) return value.bind(target);
      return async (...args: unknown[]) => {
        const node = (method === "claimSubnet" ? args[1] : args[0]) as { name: string };
        if (!held && node.name === nodeName) {
          held = true;
          reached();
          await gate;
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const wrapped: Stores = { ...inner, nodes };
  return { store: wrapped, reached: reachedP, release: open };
}

/** Names of the live nodes registered at `ip`. */
async function liveAt(s: Stores, ip: string): Promise<string[]> {
  return (await s.nodes.listNodes()).nodes
    .filter((n) => n.live && n.nodeIp === ip)
    .map((n) => n.name)
    .sort();
}

async function failureOf(p: Promise<unknown>): Promise<TrellisError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (err === undefined) throw new Error("expected the registration to be refused; it succeeded");
  expect(err).toBeInstanceOf(TrellisError);
  return err as TrellisError;
}

const reg = (name: string, nodeIp: string) => ({ name, nodeIp, mtu: 1500 });

describe("the node-IP index is checked inside the claim and update transactions", () => {
  it("a new node whose claim was decided before another new node took the IP is refused, naming the holder", async () => {
    const s = openStore();
    const held = holdWrite(s, "claimSubnet", "a");
    const a = replica(held.store).register(reg("a", "192.168.1.50"));
    await held.reached; // a read the index (free) and chose its subnet
    await replica(s).register(reg("b", "192.168.1.50"));
    held.release();
    const err = await failureOf(a);
    expect(err.reason).toBe("ALREADY_EXISTS");
    expect(err.message).toMatch(/node IP 192\.168\.1\.50 is already registered by live node b; give a its own --node-ip/);
    expect(err.message).toMatch(/EvictNode/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["b"]);
  });

  it("a known node moving to an address another node took meanwhile is refused", async () => {
    const s = openStore();
    const plain = replica(s);
    await plain.register(reg("a", "192.168.1.11"));
    await plain.withdraw("a");
    const held = holdWrite(s, "updateNode", "a");
    const a = replica(held.store).register(reg("a", "192.168.1.50"));
    await held.reached;
    await plain.register(reg("b", "192.168.1.50"));
    held.release();
    const err = await failureOf(a);
    expect(err.reason).toBe("ALREADY_EXISTS");
    expect(err.message).toMatch(/already registered by live node b/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["b"]);
    expect(await liveAt(s, "192.168.1.11")).toEqual([]);
  });

  it("taking over the IP of a node that is gone fails when that node comes back first", async () => {
    const s = openStore();
    const plain = replica(s);
    await plain.register(reg("old", "192.168.1.50"));
    await plain.withdraw("old");
    const held = holdWrite(s, "claimSubnet", "new");
    const newcomer = replica(held.store).register(reg("new", "192.168.1.50"));
    await held.reached; // new saw "old" withdrawn and decided to take its address over
    await plain.register(reg("old", "192.168.1.50"));
    held.release();
    const err = await failureOf(newcomer);
    expect(err.reason).toBe("ALREADY_EXISTS");
    expect(err.message).toMatch(/already registered by live node old/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["old"]);
  });

  it("two registrations with different names and one IP, racing through two replicas: never both live (40 trials)", async () => {
    const s = openStore();
    const other = openEtcdStores({ endpoints: [etcd.endpoint], root });
    try {
      const [r1, r2] = [replica(s), replica(other)];
      let refused = 0;
      for (let t = 0; t < 40; t++) {
        const ip = `192.168.2.${t + 1}`;
        const results = await Promise.allSettled([r1.register(reg(`a-${t}`, ip)), r2.register(reg(`b-${t}`, ip))]);
        const failed = results.filter((r) => r.status === "rejected");
        for (const f of failed) expect((f as PromiseRejectedResult).reason).toMatchObject({ reason: "ALREADY_EXISTS" });
        refused += failed.length;
        expect(await liveAt(s, ip), `trial ${t}`).toHaveLength(1);
      }
      expect(refused).toBe(40);
    } finally {
      other.close();
    }
  });
});

describe("a node's index entry is deleted only while it names that node", () => {
  it("the displaced node coming back at its old address is refused: the address is the new node's", async () => {
    const s = openStore();
    const plain = replica(s);
    await plain.register(reg("old", "192.168.1.50"));
    await plain.withdraw("old");
    await plain.register(reg("new", "192.168.1.50")); // "old" is not live: its address may be taken over
    const err = await failureOf(plain.register(reg("old", "192.168.1.50")));
    expect(err.reason).toBe("ALREADY_EXISTS");
    expect(err.message).toMatch(/already registered by live node new/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["new"]);
  });

  it("freeing the displaced node's subnet leaves the new holder's entry: a third node is still refused", async () => {
    const s = openStore();
    const plain = replica(s);
    const old = await plain.register(reg("old", "192.168.1.50"));
    await plain.withdraw("old");
    await plain.register(reg("new", "192.168.1.50"));
    await plain.release(old.subnet);
    expect(await s.nodes.findNode("old")).toBeUndefined();
    const err = await failureOf(plain.register(reg("third", "192.168.1.50")));
    expect(err.message).toMatch(/already registered by live node new/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["new"]);
  });

  it("the displaced node moving elsewhere leaves the new holder's entry: a third node is still refused", async () => {
    const s = openStore();
    const plain = replica(s);
    await plain.register(reg("old", "192.168.1.50"));
    await plain.withdraw("old");
    await plain.register(reg("new", "192.168.1.50"));
    await plain.register(reg("old", "192.168.1.60")); // moves: its old address is not its own any more
    const err = await failureOf(plain.register(reg("third", "192.168.1.50")));
    expect(err.message).toMatch(/already registered by live node new/);
    expect(await liveAt(s, "192.168.1.50")).toEqual(["new"]);
    expect(await liveAt(s, "192.168.1.60")).toEqual(["old"]);
  });

  it("a node's own entry goes with it: its address is free once its subnet is released or it moved", async () => {
    const s = openStore();
    const plain = replica(s);
    const gone = await plain.register(reg("gone", "192.168.1.70"));
    await plain.register(reg("mover", "192.168.1.71"));
    await plain.withdraw("gone");
    await plain.release(gone.subnet);
    await plain.withdraw("mover");
    await plain.register(reg("mover", "192.168.1.72"));
    expect(await s.nodes.findNodeByIp("192.168.1.70")).toBeUndefined();
    expect(await s.nodes.findNodeByIp("192.168.1.71")).toBeUndefined();
    expect(await s.nodes.findNodeByIp("192.168.1.72")).toBe("mover");
    await plain.register(reg("x", "192.168.1.70"));
    await plain.register(reg("y", "192.168.1.71"));
    expect(await liveAt(s, "192.168.1.70")).toEqual(["x"]);
    expect(await liveAt(s, "192.168.1.71")).toEqual(["y"]);
  });
});
