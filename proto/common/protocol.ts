/**
 * Version of the shim <-> daemon contract. A daemon serves shims whose version is within
 * `maxProtocolSkew` of its own, so nodes can be upgraded one component at a time.
 */
export const protocolVersion = 1;
export const maxProtocolSkew = 1;

/** Where the daemon serves the shim unless the network config says otherwise. */
export const defaultDaemonSocket = "/run/trellis/cni.sock";

/** CNI spec versions the shim accepts and answers in. */
export const supportedCniVersions = ["1.0.0", "1.1.0"] as const;

/** Route protocol number Trellis stamps on every route it owns ("proto 201" in `ip route`). */
export const trellisRouteProtocol = 201;
