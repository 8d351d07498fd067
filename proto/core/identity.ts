// Who a certificate speaks for (DESIGN.md §6): one URI SAN, `spiffe://trellis/<kind>/<name>`, read the same
// way for nodes and operators (notes/identity-anchors.md). Pure.
import { TrellisError } from "./errors.js";
import { checkNodeName } from "./node-name.js";

/** Nodes, operators with their role, and control-plane replicas (whose certificates also serve TLS). */
export const identityKinds = ["node", "admin", "viewer", "control-plane"] as const;
export type IdentityKind = (typeof identityKinds)[number];

export interface Identity {
  readonly kind: IdentityKind;
  /** A node name (Kubernetes' rules) for nodes; an operator's or a replica's name otherwise. */
  readonly name: string;
}

const trustDomain = "spiffe://trellis/";
const userNamePattern = /^[a-z0-9]([-a-z0-9._@]{0,62}[a-z0-9])?$/;

export function checkIdentity(identity: Identity): Identity {
  if (!(identityKinds as readonly string[]).includes(identity.kind)) {
    throw new TrellisError("INVALID_ARGUMENT", `identity kind ${JSON.stringify(identity.kind)} is not one of ${identityKinds.join(", ")}`);
  }
  if (identity.kind === "node") checkNodeName(identity.name, "node name");
  else if (!userNamePattern.test(identity.name)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `${identity.kind} name ${JSON.stringify(identity.name)} must be 1-64 lowercase letters, digits, '-', '.', '_' or '@', starting and ending with a letter or digit`,
    );
  }
  return identity;
}

export function identityUri(identity: Identity): string {
  checkIdentity(identity);
  return `${trustDomain}${identity.kind}/${identity.name}`;
}

/** The identity a URI SAN names; undefined for anything that is not exactly one of ours. */
export function parseIdentityUri(uri: string): Identity | undefined {
  if (!uri.startsWith(trustDomain)) return undefined;
  const [kind, name, ...rest] = uri.slice(trustDomain.length).split("/");
  if (rest.length > 0 || kind === undefined || name === undefined) return undefined;
  try {
    return checkIdentity({ kind: kind as IdentityKind, name });
  } catch {
    return undefined;
  }
}
