// The contract of ClusterConfigStore (control-plane/store/cluster-config-store.ts), run on the Memory stores
// (unit) and on etcd (integration): the first replica's config is the cluster's. EtcdClusterConfigStore is
// the reference.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import type { Stores } from "../../control-plane/store/stores.js";
import { ClusterConfigRecordSchema } from "../../proto/gen/trellis/store/v1/store_pb.js";

const config = (clusterCidr: string, subnetPrefixLength = 24) => create(ClusterConfigRecordSchema, { clusterCidr, subnetPrefixLength });

export function describeClusterConfigStoreContract(name: string, make: () => Promise<Stores>): void {
  describe(`ClusterConfigStore contract: ${name}`, () => {
    it("the first config is stored; later ones get it back and change nothing", async () => {
      const s = await make();
      expect(await s.clusterConfig.ensureClusterConfig(config("10.244.0.0/16"))).toEqual(config("10.244.0.0/16"));
      expect(await s.clusterConfig.ensureClusterConfig(config("10.96.0.0/12", 26))).toEqual(config("10.244.0.0/16"));
      expect(await s.clusterConfig.ensureClusterConfig(config("10.244.0.0/16"))).toEqual(config("10.244.0.0/16"));
    });

    it("two replicas storing different configs at once both get the one that was stored", async () => {
      const s = await make();
      const [a, b] = await Promise.all(
        [config("10.244.0.0/16"), config("10.96.0.0/12", 26)].map((c) => s.clusterConfig.ensureClusterConfig(c)),
      );
      expect(a).toEqual(b);
      expect(await s.clusterConfig.ensureClusterConfig(config("10.1.0.0/16"))).toEqual(a);
    });
  });
}
