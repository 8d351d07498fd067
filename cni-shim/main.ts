// The CNI plugin executable ("type": "trellis"): env + stdin in, one JSON object out, logs on stderr.
// Compiled by Bun into one file; it loads only what one call needs (notes/pod-path-cost.md): Bun's own
// socket and stdin, the generated wire codec, and node:fs/node:crypto (native in Bun) for pending deletes.
import { createHash } from "node:crypto";
import { closeSync, constants, existsSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { pendingDeletesDirName } from "../proto/common/protocol.js";
import { bunDial } from "./bun-socket.js";
import { createDaemonClient } from "./daemon-client.js";
import { runShim, type ShimIo } from "./skel.js";

/** The part of Bun's API used here; resolves to the runtime's global. */
declare const Bun: { stdin: { text(): Promise<string> } };

/** Writes `content` to dir/name so that it survives a crash once this returns: temp file, fsync, rename, fsync dir. */
function writeDurably(dir: string, name: string, content: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, join(dir, name));
  const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

const io: ShimIo = {
  env: process.env,
  readStdin: () => Bun.stdin.text(),
  writeStdout: (text) => writeSync(1, `${text}\n`),
  logError: (fields, msg) =>
    writeSync(2, `${JSON.stringify({ level: 50, time: Date.now(), name: "cni-shim", pid: process.pid, ...fields, msg })}\n`),
  pathExists: async (path) => existsSync(path),
  leavePendingDelete: async (daemonSocket, attachment) => {
    const key = `${attachment.networkName}/${attachment.containerId}/${attachment.ifName}`;
    const name = `${createHash("sha256").update(key).digest("hex").slice(0, 32)}.json`;
    // The JSON form of trellis.cni.v1.Attachment (field names in lowerCamelCase), as the daemon reads it.
    writeDurably(join(dirname(daemonSocket), pendingDeletesDirName), name, JSON.stringify(attachment));
  },
};

process.exitCode = await runShim(io, (socketPath) => createDaemonClient(socketPath, bunDial));
