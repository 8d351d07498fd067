#!/usr/bin/env node
// The CNI plugin executable ("type": "trellis"): env + stdin in, one JSON object out, logs on stderr.
import { access } from "node:fs/promises";
import { createDaemonClient } from "./daemon-client.js";
import { runShim, type ShimIo } from "./skel.js";

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
  pathExists: (path) => access(path).then(() => true, () => false),
};

void runShim(io, (socketPath) => createDaemonClient(socketPath)).then((code) => {
  process.exitCode = code;
});
