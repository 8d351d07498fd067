/** What an etcd compare-and-swap is for: the `txn` label of trellis_etcd_txn_conflicts_total. */
export const txnKinds = [
  "claim_subnet",
  "update_node",
  "remove_node",
  "report_routes",
  "expire_node",
  "disruption",
  "reservation",
  "join_token",
  "node_certificates",
] as const;

export type TxnKind = (typeof txnKinds)[number];
