/**
 * Version of the shim <-> daemon contract. A daemon serves shims whose version is within
 * `maxProtocolSkew` of its own, so nodes can be upgraded one component at a time.
 */
export const protocolVersion = 1;
export const maxProtocolSkew = 1;

/** Where the daemon serves the shim unless the network config says otherwise. */
export const defaultDaemonSocket = "/run/trellis/cni.sock";

/** CNI spec versions the shim accepts and answers in, oldest first. */
export const supportedCniVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;

/** Pending DEL requests the shim leaves when the daemon is unreachable: `<dir of the socket>/<this>/`. */
export const pendingDeletesDirName = "pending-deletes";

/** Route protocol number Trellis stamps on every route it owns ("proto 201" in `ip route`). */
export const trellisRouteProtocol = 201;
