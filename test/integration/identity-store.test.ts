import { afterAll, beforeAll } from "vitest";
import { EtcdIdentityStore } from "../../control-plane/store/etcd-identity-store.js";
import { describeIdentityStoreContract } from "../contract/identity-store.js";
import { namespace } from "../support/control-plane.js";
import { type EtcdHandle, startEtcd } from "../support/etcd.js";

let etcd: EtcdHandle;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describeIdentityStoreContract("etcd", async () => new EtcdIdentityStore({ endpoints: [etcd.endpoint], root: namespace() }));
