import type { SubnetLeaseRecord, SubnetReservationRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

/** A subnet freed and not leased since, with the revision of the transaction that freed it. */
export interface FreedSubnetEntry {
  readonly subnet: string;
  readonly freedRevision: bigint;
}

/** Which subnets are leased and which were freed: what a new node's subnet is chosen among. */
export interface SubnetUse {
  readonly leasedSubnets: readonly string[];
  readonly freedSubnets: readonly FreedSubnetEntry[];
}

/** Subnet leases as operators see them, and reservations. Leases are written by NodeStore's transactions. */
export interface SubnetStore {
  listLeases(): Promise<SubnetLeaseRecord[]>;
  /** Every leased and every freed subnet, keys only; the two lists may be read at different revisions. */
  readSubnetUse(): Promise<SubnetUse>;
  listReservations(): Promise<SubnetReservationRecord[]>;
  /** Creates a reservation; false when the subnet is reserved already. */
  createReservation(reservation: SubnetReservationRecord): Promise<boolean>;
  /** Succeeds when there was none. */
  deleteReservation(subnet: string): Promise<void>;
}
