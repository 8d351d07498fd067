// Pod egress (DESIGN.md §1): the nftables script of Trellis's own table, and the nft version it needs. Pure;
// nft-masquerade.ts runs it.
import { Cidr } from "../../proto/core/cidr.js";
import { TrellisError } from "../../proto/core/errors.js";

/** `table ip trellis`: nothing else touches it, and Trellis touches nothing else. */
export const masqueradeTable = "trellis";

/** The oldest nft whose `nft -f` takes this script as one transaction (Debian 11 and Ubuntu 20.04 have newer). */
export const minimumNftVersion = [0, 9, 3] as const;

/**
 * The script that makes Trellis's table what it must be, in one `nft -f` transaction: declare the table
 * (so the delete cannot fail when it is not there), delete it, and, when `clusterCidr` is given, recreate
 * it with one rule: pod traffic to outside the cluster CIDR leaves with the node's address; pod-to-pod
 * traffic keeps its own. Without `clusterCidr` (masquerade off) the table is only removed.
 */
export function masqueradeScript(clusterCidr: string | undefined): string {
  const t = masqueradeTable;
  const head = `# written by the Trellis node daemon; replaced as a whole on every start\ntable ip ${t}\ndelete table ip ${t}\n`;
  if (clusterCidr === undefined) return head;
  const cidr = Cidr.parse(clusterCidr, "cluster CIDR").toString();
  return `${head}table ip ${t} {
\tchain postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tip saddr ${cidr} ip daddr != ${cidr} masquerade
\t}
}
`;
}

const noMasquerade = "or start the daemon with --no-masquerade where pod addresses are routable outside the cluster";

/** Checks `nft --version` output; throws UNAVAILABLE saying what to install when nft is too old or unreadable. */
export function checkNftVersion(output: string): void {
  const m = /\bv?(\d+)\.(\d+)(?:\.(\d+))?/.exec(output);
  if (!m) {
    throw new TrellisError(
      "UNAVAILABLE",
      `could not read the version of nft from ${JSON.stringify(output.trim().slice(0, 80))}: install nftables ${minimumNftVersion.join(".")} or newer (Debian: apt-get install nftables), ${noMasquerade}`,
    );
  }
  const found = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  const [a = 0, b = 0, c = 0] = found;
  const [x, y, z] = minimumNftVersion;
  const older = a !== x ? a < x : b !== y ? b < y : c < z;
  if (older) {
    throw new TrellisError(
      "UNAVAILABLE",
      `nft ${found.join(".")} is too old: Trellis needs nftables ${minimumNftVersion.join(".")} or newer for pod egress masquerade; upgrade nftables, ${noMasquerade}`,
    );
  }
}

/** The start-up error when there is no nft at all. */
export function nftMissing(path: string): TrellisError {
  return new TrellisError(
    "UNAVAILABLE",
    `${path} (nftables) was not found: pod egress masquerade needs nftables ${minimumNftVersion.join(".")} or newer; install it (Debian: apt-get install nftables), ${noMasquerade}`,
  );
}

/** Trellis's nftables table, behind a seam (nft-masquerade.ts runs nft; tests record). */
export interface Masquerade {
  /** Throws UNAVAILABLE, saying what to do, when nft is missing or too old. */
  check(): Promise<void>;
  /** Makes the table masquerade egress from `clusterCidr`, or removes it (undefined). Idempotent. */
  apply(clusterCidr: string | undefined): Promise<void>;
}
