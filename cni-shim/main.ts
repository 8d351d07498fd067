// The CNI plugin executable ("type": "trellis"): env + stdin in, one JSON object out, logs on stderr.
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { access, mkdir, open, rename } from "node:fs/promises";
import { dirname, join } from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { pendingDeletesDirName } from "../proto/common/protocol.js";
import { AttachmentSchema } from "../proto/gen/trellis/cni/v1/cni_pb.js";
import { createDaemonClient } from "./daemon-client.js";
import { runShim, type ShimIo } from "./skel.js";

async function writeDurably(dir: string, name: string, content: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, name));
  const dh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

const io: ShimIo = {
  env: process.env,
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  },
  writeStdout: (text) => process.stdout.write(`${text}\n`),
  logError: (fields, msg) =>
    process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), name: "cni-shim", pid: process.pid, ...fields, msg })}\n`),
  pathExists: (path) =>
    access(path).then(
      () => true,
      () => false,
    ),
  leavePendingDelete: (daemonSocket, attachment) => {
    const key = `${attachment.networkName}/${attachment.containerId}/${attachment.ifName}`;
    const name = `${createHash("sha256").update(key).digest("hex").slice(0, 32)}.json`;
    return writeDurably(join(dirname(daemonSocket), pendingDeletesDirName), name, toJsonString(AttachmentSchema, attachment));
  },
};

void runShim(io, (socketPath) => createDaemonClient(socketPath)).then((code) => {
  process.exitCode = code;
});
