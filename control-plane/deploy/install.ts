#!/usr/bin/env node
// Installs a control-plane host from this built repository: `node dist/control-plane/deploy/install.js
// [--root DIR]` (proto/core/install-plan.ts says what goes where). The unit file next to this one is what it installs.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { installHost } from "../../proto/rpc/install-files.js";
import { controlPlaneHelp } from "../config.js";

// dist/control-plane/deploy/install.js: the repository is three folders up.
const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

process.exitCode = await installHost(
  {
    kind: "control-plane",
    command: "node dist/control-plane/deploy/install.js",
    unit: "trellis-control-plane.service",
    unitSource: "control-plane/deploy/trellis-control-plane.service",
    envFile: "control-plane.env",
    envVariable: "TRELLIS_CONTROL_PLANE_FLAGS",
    programHelp: controlPlaneHelp,
    exampleFlags:
      "--etcd-endpoints http://ETCD:2379 --listen 0.0.0.0:6443 --cluster-cidr 10.244.0.0/16 --subnet-size 24 --client-ca /etc/trellis/ca/ca.crt --ca-key /etc/trellis/ca/ca.key --tls-cert /etc/trellis/control-plane.crt --tls-key /etc/trellis/control-plane.key",
    distFolders: ["control-plane", "proto"],
  },
  repo,
  process.argv.slice(2),
  process,
);
