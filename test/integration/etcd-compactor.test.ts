// Issue 10, finding 1: etcd's history is compacted, so that a busy cluster does not fill etcd's quota.
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe("the etcd compactor", () => {
  it("compacts history older than the revisions it keeps; old revisions are then gone, current values stay", async () => {
    const client = new Etcd3({ hosts: [etcd.endpoint] });
    const stores = openEtcdStores({ endpoints: [etcd.endpoint] });
    const compactor = stores.compactor;
    try {
      const key = `${namespace()}/k`;
      const first = await client.put(key).value("0").exec();
      for (let i = 1; i <= 50; i++) await client.put(key).value(String(i)).exec();
      const to = await compactor.compact(10);
      expect(to).toBeGreaterThan(BigInt(first.header.revision));
      await expect(client.get(key).revision(first.header.revision).string()).rejects.toThrow(/compacted/);
      expect(await client.get(key).string()).toBe("50");
      // Again at once: nothing new to compact is not an error.
      await expect(compactor.compact(10)).resolves.toBeUndefined();
      expect(await compactor.compact(1_000_000)).toBeUndefined();
    } finally {
      stores.close();
      client.close();
    }
  });
});
