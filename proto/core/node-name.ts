import { TrellisError } from "./errors.js";

const nodeNamePattern = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Node names follow Kubernetes' (a DNS subdomain); throws INVALID_ARGUMENT naming `what`. */
export function checkNodeName(name: string, what: string): string {
  if (!nodeNamePattern.test(name)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `${what} ${JSON.stringify(name)} is not a valid node name (lowercase letters, digits, '-' and '.', at most 253)`,
    );
  }
  return name;
}
