import { toJsonString } from "@bufbuild/protobuf";
import { Cidr } from "../../proto/core/cidr.js";
import {
  type SubnetLeaseRecord,
  SubnetLeaseRecordSchema,
  type SubnetReservationRecord,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, etcdPageSize, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import { subnetOfKey } from "./keys.js";
import type { SubnetStore, SubnetUse } from "./subnet-store.js";

/** SubnetStore over etcd. Subnet leases (written by EtcdNodeStore's transactions) and reservations. */
export class EtcdSubnetStore extends EtcdStore implements SubnetStore {
  async listLeases(): Promise<SubnetLeaseRecord[]> {
    const res = await this.call("range", "list subnet leases", () => rangePaged(this.etcd, this.keys.subnetsPrefix));
    return res.kvs.map((kv) => decodeRecord(SubnetLeaseRecordSchema, kv));
  }

  async readSubnetUse(): Promise<SubnetUse> {
    const k = this.keys;
    // Keys only, in big pages: the subnet is the key, and a freed subnet's mod revision orders the line.
    const keys = (prefix: string) =>
      this.call("range", `list ${prefix}`, () => rangePaged(this.etcd, prefix, { keysOnly: true, pageSize: 10 * etcdPageSize }));
    const [leases, freed] = await Promise.all([keys(k.subnetsPrefix), keys(k.freedSubnetsPrefix)]);
    return {
      leasedSubnets: leases.kvs.map((kv) => subnetOfKey(kv.key.toString(), k.subnetsPrefix)),
      freedSubnets: freed.kvs.map((kv) => ({
        subnet: subnetOfKey(kv.key.toString(), k.freedSubnetsPrefix),
        freedRevision: BigInt(kv.mod_revision),
      })),
    };
  }

  async listReservations(): Promise<SubnetReservationRecord[]> {
    const res = await this.call("range", "list reservations", () => rangePaged(this.etcd, this.keys.reservationsPrefix));
    return res.kvs.map((kv) => decodeRecord(SubnetReservationRecordSchema, kv));
  }

  async createReservation(reservation: SubnetReservationRecord): Promise<boolean> {
    const key = this.keys.reservation(Cidr.parse(reservation.subnet));
    const res = await this.call("txn", `reserve ${reservation.subnet}`, () =>
      this.etcd
        .if(key, "Version", "==", 0)
        .then(this.etcd.put(key).value(toJsonString(SubnetReservationRecordSchema, reservation)))
        .commit(),
    );
    return this.applied(res, "reservation");
  }

  async deleteReservation(subnet: string): Promise<void> {
    await this.call("delete", `delete reservation ${subnet}`, () =>
      this.etcd
        .delete()
        .key(this.keys.reservation(Cidr.parse(subnet)))
        .exec(),
    );
  }
}
