// Trellis's own nftables table, written with one `nft -f` (one transaction) from the daemon's network
// namespace. The script is masquerade-script.ts's; this file only runs nft (STYLE.md §3: a net/ adapter).
import { execFile } from "node:child_process";
import { TrellisError } from "../../proto/core/errors.js";
import { checkNftVersion, type Masquerade, masqueradeScript, masqueradeTable, nftMissing } from "./masquerade-script.js";

interface NftRun {
  readonly missing: boolean;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function runNft(nft: string, args: readonly string[], stdin?: string): Promise<NftRun> {
  return new Promise((resolve) => {
    const child = execFile(nft, [...args], { timeout: 10_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = (err as { code?: unknown } | null)?.code;
      resolve({ missing: code === "ENOENT", code: err ? (typeof code === "number" ? code : 1) : 0, stdout, stderr });
    });
    child.stdin?.on("error", () => undefined); // nft that exits early (too old, missing) closes stdin
    child.stdin?.end(stdin ?? "");
  });
}

export class NftMasquerade implements Masquerade {
  /** `nft`: the command, found on PATH. */
  constructor(private readonly nft = "nft") {}

  async check(): Promise<void> {
    const res = await runNft(this.nft, ["--version"]);
    if (res.missing) throw nftMissing(this.nft);
    if (res.code !== 0) {
      throw new TrellisError(
        "UNAVAILABLE",
        `${this.nft} --version failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}; install nftables, or start the daemon with --no-masquerade`,
      );
    }
    checkNftVersion(res.stdout);
  }

  async apply(clusterCidr: string | undefined): Promise<void> {
    const res = await runNft(this.nft, ["-f", "/dev/stdin"], masqueradeScript(clusterCidr));
    if (res.missing && clusterCidr === undefined) return; // no nft: no table of ours to remove
    if (res.missing) throw nftMissing(this.nft);
    if (res.code !== 0) {
      throw new TrellisError(
        "KERNEL",
        `could not ${clusterCidr ? "write" : "remove"} the nftables table ip ${masqueradeTable} (${this.nft} -f): ${res.stderr.trim() || `exit ${res.code}`}`,
      );
    }
  }
}
