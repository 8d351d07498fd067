#!/usr/bin/env node
// trellis-ca: create the cluster CA and issue credentials from it (control-plane/ca/ca-config.ts).
import { TrellisError } from "../../proto/core/errors.js";
import { configOrReport } from "../../proto/core/flags.js";
import { caHelp, parseCaArgs } from "./ca-config.js";
import { initCa, issueCredential } from "./ca-files.js";

async function main(): Promise<void> {
  const cmd = configOrReport("trellis-ca", process.argv.slice(2), parseCaArgs, caHelp, process);
  if (!cmd) return;
  if (cmd.command === "init") {
    const { certificate, key } = await initCa(cmd.dir, cmd.days);
    process.stdout.write(`created the cluster CA: ${certificate} (share it) and ${key} (mode 0600; keep it secret)\n`);
    if (cmd.admin) {
      const admin = await issueCredential(cmd.dir, cmd.admin.out, cmd.admin.identity, 12 * 3600);
      process.stdout.write(
        `issued the first admin, ${cmd.admin.identity.name}, for 12 h: ${admin.certificate} and ${admin.key} (mode 0600)\n`,
      );
    }
    return;
  }
  const { certificate, key } = await issueCredential(cmd.dir, cmd.out, cmd.identity, cmd.hours * 3600, cmd.server);
  process.stdout.write(
    `issued spiffe://trellis/${cmd.identity.kind}/${cmd.identity.name} for ${cmd.hours} h: ${certificate} and ${key} (mode 0600)\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`trellis-ca: ${err instanceof TrellisError ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
