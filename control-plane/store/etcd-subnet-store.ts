import { toJsonString } from "@bufbuild/protobuf";
import { Cidr } from "../../proto/core/cidr.js";
import {
  type SubnetLeaseRecord,
  SubnetLeaseRecordSchema,
  type SubnetReservationRecord,
  SubnetReservationRecordSchema,
} from "../../proto/gen/trellis/store/v1/store_pb.js";
import { decodeRecord, rangePaged } from "./etcd-codec.js";
import { EtcdStore } from "./etcd-context.js";
import type { SubnetStore } from "./subnet-store.js";

/** SubnetStore over etcd. Subnet leases (written by EtcdNodeStore's transactions) and reservations. */
export class EtcdSubnetStore extends EtcdStore implements SubnetStore {
  async listLeases(): Promise<SubnetLeaseRecord[]> {
    const res = await this.call("range", "list subnet leases", () => rangePaged(this.etcd, this.keys.subnetsPrefix));
    return res.kvs.map((kv) => decodeRecord(SubnetLeaseRecordSchema, kv));
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
    return this.applied(res);
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
