import type { SubnetLeaseRecord, SubnetReservationRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

/** Subnet leases as operators see them, and reservations. Leases are written by NodeStore's transactions. */
export interface SubnetStore {
  listLeases(): Promise<SubnetLeaseRecord[]>;
  listReservations(): Promise<SubnetReservationRecord[]>;
  /** Creates a reservation; false when the subnet is reserved already. */
  createReservation(reservation: SubnetReservationRecord): Promise<boolean>;
  /** Succeeds when there was none. */
  deleteReservation(subnet: string): Promise<void>;
}
