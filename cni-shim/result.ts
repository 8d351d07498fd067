import { cniCodeOf, TrellisError } from "../proto/core/errors.js";
import { supportedCniVersions } from "../proto/core/protocol.js";
import type { AddAttachmentResponse } from "../proto/gen/trellis/cni/v1/cni_wire.js";

/** CNI's well-known error codes (spec §Error), plus Trellis's own from 100 up (STYLE.md §6). */
export const cniCodes = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** STATUS: the plugin cannot serve ADD. */
  notAvailable: 50,
  /** STATUS: existing pods may have limited connectivity. */
  limitedConnectivity: 51,
} as const;

/** An error found by the shim itself, with its CNI code. */
export class CniError extends Error {
  override readonly name = "CniError";
  constructor(
    readonly code: number,
    message: string,
    readonly details = "",
  ) {
    super(message);
  }
}

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export const latestCniVersion = supportedCniVersions[supportedCniVersions.length - 1] ?? "1.1.0";

/** Any error -> the one CNI error object printed on stdout. Pure. */
export function toCniError(err: unknown, cniVersion: string = latestCniVersion): CniErrorJson {
  if (err instanceof CniError) return { cniVersion, code: err.code, msg: err.message, ...(err.details ? { details: err.details } : {}) };
  if (err instanceof TrellisError) return { cniVersion, code: cniCodeOf[err.reason], msg: err.message, details: `reason ${err.reason}` };
  return { cniVersion, code: 999, msg: "internal error in the trellis shim; see its log on stderr" };
}

/** Compares dotted CNI versions ("0.4.0" < "1.0.0"). */
export function versionAtLeast(version: string, minimum: string): boolean {
  const a = version.split(".").map(Number);
  const b = minimum.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/**
 * The ADD result in the shape of the requested CNI version. Pure.
 * 0.3.x and 0.4.0 carry `ips[].version`; 1.0.0 dropped it; 1.1.0 adds `interfaces[].mtu`.
 */
export function toCniResult(res: AddAttachmentResponse, cniVersion: string): Record<string, unknown> {
  const withMtu = versionAtLeast(cniVersion, "1.1.0");
  const withIpVersion = !versionAtLeast(cniVersion, "1.0.0");
  return {
    cniVersion,
    interfaces: res.interfaces.map((i) => ({
      name: i.name,
      ...(i.mac ? { mac: i.mac } : {}),
      ...(withMtu && i.mtu ? { mtu: i.mtu } : {}),
      ...(i.sandbox ? { sandbox: i.sandbox } : {}),
    })),
    ips: res.ips.map((ip) => ({
      ...(withIpVersion ? { version: "4" } : {}),
      interface: ip.interface,
      address: ip.address,
      ...(ip.gateway ? { gateway: ip.gateway } : {}),
    })),
    routes: res.routes.map((r) => ({ dst: r.dst, ...(r.gw ? { gw: r.gw } : {}) })),
    dns: {},
  };
}

export function versionResult(cniVersion: string): Record<string, unknown> {
  return { cniVersion, supportedVersions: [...supportedCniVersions] };
}
