// What installing a Trellis host puts where (issue 11, installs): pure, shared by the two install commands
// (node-daemon/deploy/install.ts, control-plane/deploy/install.ts); proto/rpc/install-files.ts carries it out.
import { TrellisError } from "./errors.js";
import { parseFlags } from "./flags.js";

export type HostKind = "node" | "control-plane";

export interface InstallOptions {
  /** Everything goes under this directory ("/" on a real host; a temporary directory in tests). */
  readonly root: string;
  /** Where the program files go, as the host sees it (default /opt/trellis). */
  readonly prefix: string;
  /** The CNI bin dir for the shim, as the host sees it (nodes; default /opt/cni/bin). */
  readonly cniBinDir: string;
}

/** One thing the install does. Paths in `to` are under the root; `from` is in the built repository. */
export type InstallStep =
  | { readonly action: "copy"; readonly from: string; readonly to: string; readonly mode: number }
  | { readonly action: "tree"; readonly from: string; readonly to: string }
  | {
      readonly action: "write";
      readonly to: string;
      readonly text: string;
      readonly mode: number;
      /** Leave a file that exists alone (the operator's env file). */
      readonly keepExisting: boolean;
    };

export interface HostFiles {
  /** The unit's name, e.g. trellis-node-daemon.service. */
  readonly unit: string;
  /** Its text from the repository (node-daemon/deploy/, control-plane/deploy/). */
  readonly unitText: string;
  /** The environment file's name in /etc/trellis, e.g. node-daemon.env. */
  readonly envFile: string;
  readonly envText: string;
  /** dist/ subfolders the program needs, e.g. ["node-daemon", "proto"]. */
  readonly distFolders: readonly string[];
}

export const installHelp = (
  command: string,
  kind: HostKind,
) => `Usage: ${command} [--root DIR] [--prefix DIR]${kind === "node" ? " [--cni-bin-dir DIR]" : ""}

Installs a Trellis ${kind === "node" ? "node (the node daemon and the CNI shim)" : "control-plane host"} from this built repository
(npm ci && npm run build first): the program files in PREFIX (dist/, package.json and the production
node_modules), ${kind === "node" ? "the shim as CNI-BIN-DIR/trellis, " : ""}the systemd unit in /etc/systemd/system, and
/etc/trellis/${kind === "node" ? "node-daemon" : "control-plane"}.env with the program's flags, every default as a comment. An env file that
exists already is kept as it is; everything else is replaced. Run it again after an upgrade (and then
systemctl daemon-reload). It starts nothing: edit the env file, then systemctl enable --now the unit.

Flags:
  --root DIR          install under DIR instead of / (a staging or image root) (default /)
  --prefix DIR        where the program files go, as the host sees them (default /opt/trellis)
${kind === "node" ? "  --cni-bin-dir DIR   the runtime's CNI bin dir, where the shim goes (default /opt/cni/bin)\n" : ""}  -h, --help          print this help and exit
`;

/** Parses an install command's flags; throws INVALID_ARGUMENT naming the flag. Pure. */
export function parseInstallArgs(argv: readonly string[], kind: HostKind): InstallOptions | "help" {
  const { values } = parseFlags(argv, {
    root: { type: "string", default: "/" },
    prefix: { type: "string", default: "/opt/trellis" },
    ...(kind === "node" ? { "cni-bin-dir": { type: "string", default: "/opt/cni/bin" } } : {}),
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  const cniBinDir = String((values as Record<string, unknown>)["cni-bin-dir"] ?? "/opt/cni/bin");
  for (const [flag, value] of [
    ["--root", values.root],
    ["--prefix", values.prefix],
    ["--cni-bin-dir", cniBinDir],
  ] as const) {
    if (!value.startsWith("/")) throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(value)} must be an absolute path`);
    if (/\s/.test(value))
      throw new TrellisError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(value)} must not contain whitespace (systemd splits on it)`);
  }
  return { root: values.root, prefix: values.prefix.replace(/(.)\/+$/, "$1"), cniBinDir: cniBinDir.replace(/(.)\/+$/, "$1") };
}

/** `path` (absolute, as the host sees it) under `root`. */
export function underRoot(root: string, path: string): string {
  return `${root.replace(/\/+$/, "")}${path}`;
}

/** The top-level packages of package-lock.json that are not dev-only: what the programs load at run time. */
export function productionPackages(lock: { readonly packages?: Record<string, { readonly dev?: boolean }> }): string[] {
  return Object.entries(lock.packages ?? {})
    .filter(([path, p]) => /^node_modules\/(@[^/]+\/)?[^/@][^/]*$/.test(path) && p.dev !== true)
    .map(([path]) => path)
    .sort();
}

/**
 * The unit as installed: the repository's text with the program files at `prefix` and node at `nodeBinary`
 * (the node that runs the install; systemd needs an absolute path).
 */
export function unitFor(unitText: string, prefix: string, nodeBinary: string): string {
  return unitText.replaceAll("/opt/trellis/", `${prefix}/`).replaceAll("/usr/bin/node ", `${nodeBinary} `);
}

/**
 * An environment file for a program: its help (every flag with its default) as comments, then the one
 * variable the unit passes to the program, set to `example` for the operator to edit.
 */
export function envFileFor(unit: string, variable: string, help: string, example: string): string {
  const commented = help
    .trimEnd()
    .split("\n")
    .map((line) => (line ? `#   ${line}` : "#"))
    .join("\n");
  return `# Flags of ${unit}, read by it (EnvironmentFile). After a change: systemctl restart ${unit}
# (a restart keeps the node's routes and pods: stopping is not leaving). ${variable} is split at spaces
# into arguments. Every flag, with its default (the program's --help):
#
${commented}
#
${variable}="${example}"
`;
}

/** Everything installing a host of `kind` does, in order. Pure. */
export function installPlan(
  kind: HostKind,
  options: InstallOptions,
  files: HostFiles,
  nodeBinary: string,
  packages: readonly string[],
): InstallStep[] {
  const at = (path: string) => underRoot(options.root, path);
  const steps: InstallStep[] = [
    ...files.distFolders.map((d): InstallStep => ({ action: "tree", from: `dist/${d}`, to: at(`${options.prefix}/dist/${d}`) })),
    { action: "copy", from: "package.json", to: at(`${options.prefix}/package.json`), mode: 0o644 },
    ...packages.map((p): InstallStep => ({ action: "tree", from: p, to: at(`${options.prefix}/${p}`) })),
  ];
  if (kind === "node") steps.push({ action: "copy", from: "dist/bin/trellis", to: at(`${options.cniBinDir}/trellis`), mode: 0o755 });
  steps.push(
    {
      action: "write",
      to: at(`/etc/systemd/system/${files.unit}`),
      text: unitFor(files.unitText, options.prefix, nodeBinary),
      mode: 0o644,
      keepExisting: false,
    },
    { action: "write", to: at(`/etc/trellis/${files.envFile}`), text: files.envText, mode: 0o600, keepExisting: true },
  );
  return steps;
}
