#!/usr/bin/env node
// Installs a node from this built repository: `node dist/node-daemon/deploy/install.js [--root DIR]`
// (proto/core/install-plan.ts says what goes where). The unit file next to this one is what it installs.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { installHost } from "../../proto/rpc/install-files.js";
import { daemonHelp } from "../config.js";

// dist/node-daemon/deploy/install.js: the repository is three folders up.
const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

process.exitCode = await installHost(
  {
    kind: "node",
    command: "node dist/node-daemon/deploy/install.js",
    unit: "trellis-node-daemon.service",
    unitSource: "node-daemon/deploy/trellis-node-daemon.service",
    envFile: "node-daemon.env",
    envVariable: "TRELLIS_NODE_DAEMON_FLAGS",
    programHelp: daemonHelp,
    exampleFlags:
      "--node-name NODE-NAME --node-ip NODE-IP --control-plane CONTROL-PLANE:6443 --ca-cert /etc/trellis/ca.crt --join-token-file /etc/trellis/join-token",
    distFolders: ["node-daemon", "proto"],
  },
  repo,
  process.argv.slice(2),
  process,
);
