// The CNI plugin executable ("type": "trellis"): env + stdin in, one JSON object out, logs on stderr.
// Compiled by Bun into one file. It loads only what one call needs (notes/pod-path-cost.md): Bun's own
// stdin, stdout and socket, and the generated wire codec. Measured per module in a Bun binary: node:crypto
// costs ~5 ms of CPU and 8 MiB, process.stdout ~14 ms, node:fs ~2 ms and 6 MiB, so none is used on the
// common path; node:fs is loaded only to leave a pending delete while the daemon is down.
import { pendingDeletesDirName } from "../proto/core/protocol.js";
import type { Attachment } from "../proto/gen/trellis/cni/v1/cni_wire.js";
import { bunDial } from "./bun-socket.js";
import { createDaemonClient } from "./daemon-client.js";
import { maxStdinBytes, runShim, type ShimIo } from "./skel.js";

/** The part of Bun's API used here; resolves to the runtime's global. */
declare const Bun: {
  stdin: { stream(): AsyncIterable<Uint8Array> };
  stdout: unknown;
  stderr: unknown;
  write(destination: unknown, data: string): Promise<number>;
  file(path: string): { exists(): Promise<boolean> };
};

/** FNV-1a, 32 bits, as 8 hex digits: a short, stable tag for a network name in a file name. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/**
 * Leaves a DEL the daemon could not take as `<dir of socket>/pending-deletes/<net>-<container>-<if>.json`,
 * durably (temp file, fsync, rename, fsync of the directory): the daemon completes it when it starts.
 */
async function leavePendingDelete(daemonSocket: string, attachment: Attachment): Promise<void> {
  const fs = await import("node:fs");
  const dir = `${daemonSocket.slice(0, daemonSocket.lastIndexOf("/"))}/${pendingDeletesDirName}`;
  const name = `${fnv1a(attachment.networkName)}-${attachment.containerId}-${attachment.ifName}.json`;
  const tmp = `${dir}/.${name}.${process.pid}.tmp`;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
  try {
    // The JSON form of trellis.cni.v1.Attachment (field names in lowerCamelCase), as the daemon reads it.
    fs.writeSync(fd, JSON.stringify(attachment));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, `${dir}/${name}`);
  const dirFd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

/** Reads the network config, refusing more than maxStdinBytes (DESIGN.md §6: every input is bounded). */
async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of Bun.stdin.stream()) {
    size += chunk.length;
    if (size > maxStdinBytes) throw new Error(`it is over ${maxStdinBytes} bytes`);
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}

let stdout = "";
let stderr = "";
const io: ShimIo = {
  env: process.env,
  readStdin,
  writeStdout: (text) => {
    stdout += `${text}\n`;
  },
  logError: (fields, msg) => {
    stderr += `${JSON.stringify({ level: 50, time: Date.now(), name: "cni-shim", pid: process.pid, ...fields, msg })}\n`;
  },
  pathExists: (path) => Bun.file(path).exists(),
  leavePendingDelete,
};

const code = await runShim(io, (socketPath) => createDaemonClient(socketPath, bunDial));
if (stderr) await Bun.write(Bun.stderr, stderr);
if (stdout) await Bun.write(Bun.stdout, stdout);
process.exitCode = code;
