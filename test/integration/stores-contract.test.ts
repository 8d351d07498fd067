// Every store port's contract (test/contract/*-store.ts) on etcd: the reference the Memory stores are held to.
import { Etcd3 } from "etcd3";
import { afterAll, afterEach, beforeAll } from "vitest";
import { type EtcdStores, openEtcdStores } from "../../control-plane/store/etcd-stores.js";
import { describeAllocationStoreContract } from "../contract/allocation-store.js";
import { describeClusterConfigStoreContract } from "../contract/cluster-config-store.js";
import { describeEventStoreContract } from "../contract/event-store.js";
import { describeLivenessStoreContract } from "../contract/liveness-store.js";
import { type CompactableStores, describeNodeStoreContract } from "../contract/node-store.js";
import { describeRouteReportStoreContract } from "../contract/route-report-store.js";
import { describeSubnetStoreContract } from "../contract/subnet-store.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
let wiper: Etcd3;
beforeAll(async () => {
  etcd = await startEtcd();
  wiper = new Etcd3({ hosts: etcd.endpoint });
});
afterAll(async () => {
  wiper?.close();
  await etcd?.stop();
});

const opened: Array<{ stores: EtcdStores; root: string }> = [];
afterEach(async () => {
  for (const { stores, root } of opened.splice(0)) {
    stores.close();
    await wiper.delete().prefix(`${root}/`);
  }
});

async function open(): Promise<CompactableStores> {
  const root = namespace();
  const stores = openEtcdStores({ endpoints: [etcd.endpoint], root });
  opened.push({ stores, root });
  return {
    ...stores,
    compact: async () => {
      await stores.compactor.compact(0);
    },
  };
}

describeNodeStoreContract("etcd", open);
describeLivenessStoreContract("etcd", open);
describeSubnetStoreContract("etcd", open);
describeAllocationStoreContract("etcd", open);
describeRouteReportStoreContract("etcd", open);
describeClusterConfigStoreContract("etcd", open);
describeEventStoreContract("etcd", open);
