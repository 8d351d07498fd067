import { containerIdPattern, invalidIfNameReason } from "../proto/core/cni-names.js";
import { TrellisError } from "../proto/core/errors.js";
import { defaultDaemonSocket, supportedCniVersions } from "../proto/core/protocol.js";
import {
  type AddAttachmentResponse,
  type Attachment,
  type AttachmentKey,
  type GetStatusResponse,
  RouteState,
} from "../proto/gen/trellis/cni/v1/cni_wire.js";
import { CniError, cniCodes, latestCniVersion, toCniError, toCniResult, versionAtLeast, versionResult } from "./result.js";

/** The most network config the shim reads from stdin: a conflist entry with prevResult is a few KiB. */
export const maxStdinBytes = 1 << 20;

/** Process I/O of one shim run, injected so the dispatcher stays pure. */
export interface ShimIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Rejects when stdin holds more than maxStdinBytes. */
  readStdin(): Promise<string>;
  writeStdout(text: string): void;
  /** One JSON log line on stderr (stdout carries only the CNI result). */
  logError(fields: Record<string, unknown>, message: string): void;
  pathExists(path: string): Promise<boolean>;
  /**
   * Durably records a DEL the daemon could not take (it is down), next to its socket; the daemon
   * completes it when it starts.
   */
  leavePendingDelete(daemonSocket: string, attachment: Attachment): Promise<void>;
}

export interface DaemonClient {
  add(attachment: Attachment): Promise<AddAttachmentResponse>;
  delete(attachment: Attachment): Promise<void>;
  check(attachment: Attachment): Promise<void>;
  gc(networkName: string, valid: readonly AttachmentKey[]): Promise<void>;
  status(): Promise<GetStatusResponse>;
}

export type Command = "ADD" | "DEL" | "CHECK" | "VERSION" | "GC" | "STATUS";
const commands: readonly Command[] = ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"];

/** The network config a runtime passes on stdin (the plugin's entry of the conflist). */
export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  /** Where the node daemon serves the shim; defaults to /run/trellis/cni.sock. */
  readonly daemonSocket: string;
  /** GC only: the attachments the runtime still uses. */
  readonly validAttachments?: readonly AttachmentKey[];
}

export interface CniRequest {
  readonly command: Command;
  readonly conf: NetConf;
  readonly attachment: Attachment;
}

const knownArgs = new Set(["K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID", "K8S_POD_INFRA_CONTAINER_ID", "IgnoreUnknown"]);

function envError(message: string): CniError {
  return new CniError(cniCodes.invalidEnv, message);
}

function configError(message: string): CniError {
  return new CniError(cniCodes.invalidConfig, message);
}

export function parseCommand(env: ShimIo["env"]): Command {
  const command = env.CNI_COMMAND;
  if (!command) throw envError("CNI_COMMAND is not set; the trellis plugin is run by a container runtime (see the CNI spec)");
  if (!(commands as readonly string[]).includes(command)) {
    throw envError(`CNI_COMMAND ${JSON.stringify(command)} is not one of ${commands.join(", ")}`);
  }
  return command as Command;
}

/** Parses CNI_ARGS ("K=V;K=V"): pod identity, unknown keys refused unless IgnoreUnknown=1. */
export function parseCniArgs(text: string | undefined): Record<string, string> {
  const args: Record<string, string> = {};
  if (!text) return args;
  for (const pair of text.split(";").filter(Boolean)) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw envError(`CNI_ARGS entry ${JSON.stringify(pair)} is not KEY=VALUE`);
    args[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const ignoreUnknown = ["1", "true"].includes((args.IgnoreUnknown ?? "").toLowerCase());
  const unknown = Object.keys(args).filter((k) => !knownArgs.has(k));
  if (unknown.length > 0 && !ignoreUnknown) {
    throw envError(`CNI_ARGS key ${unknown.join(", ")} is not known to trellis; add IgnoreUnknown=1 to pass it anyway`);
  }
  return args;
}

function parseValidAttachments(conf: Record<string, unknown>): AttachmentKey[] | undefined {
  const key = "cni.dev/valid-attachments" in conf ? "cni.dev/valid-attachments" : "cni.dev/attachments";
  const raw = conf[key];
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw)) throw configError(`network config key "${key}" must be a list of {"containerID", "ifname"}`);
  return raw.map((entry: unknown, i) => {
    const e = entry as Record<string, unknown> | null;
    if (typeof e !== "object" || e === null || typeof e.containerID !== "string" || typeof e.ifname !== "string") {
      throw configError(`network config key "${key}"[${i}] must be an object with string "containerID" and "ifname"`);
    }
    return { containerId: e.containerID, ifName: e.ifname };
  });
}

export function parseNetConf(stdin: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(cniCodes.decode, `network config on stdin is not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CniError(cniCodes.decode, "network config on stdin is not a JSON object");
  }
  const conf = raw as Record<string, unknown>;
  const str = (key: string, required: boolean): string | undefined => {
    const v = conf[key];
    if (v === undefined && !required) return undefined;
    if (typeof v !== "string" || (required && v === "")) {
      throw configError(v === undefined ? `network config has no "${key}"` : `network config key "${key}" must be a non-empty string`);
    }
    return v;
  };
  const cniVersion = str("cniVersion", true) as string;
  if (!(supportedCniVersions as readonly string[]).includes(cniVersion)) {
    throw new CniError(
      cniCodes.incompatibleVersion,
      `cniVersion ${cniVersion} is not supported by trellis (supported: ${supportedCniVersions.join(", ")})`,
    );
  }
  const name = str("name", true) as string;
  const type = str("type", false) ?? "trellis";
  const daemonSocket = str("daemonSocket", false) ?? defaultDaemonSocket;
  if (!daemonSocket.startsWith("/")) throw configError(`network config key "daemonSocket" must be an absolute path`);
  if (
    conf.prevResult !== undefined &&
    (typeof conf.prevResult !== "object" || conf.prevResult === null || Array.isArray(conf.prevResult))
  ) {
    throw configError(`network config key "prevResult" must be an object`);
  }
  return { cniVersion, name, type, daemonSocket, validAttachments: parseValidAttachments(conf) };
}

/** Validates env and stdin for ADD, DEL and CHECK into one request. */
export async function parseCniRequest(command: "ADD" | "DEL" | "CHECK", io: ShimIo, stdin: string): Promise<CniRequest> {
  const conf = parseNetConf(stdin);
  const env = io.env;
  const containerId = env.CNI_CONTAINERID ?? "";
  if (!containerId) throw envError("CNI_CONTAINERID is not set");
  if (!containerIdPattern.test(containerId)) {
    throw envError(
      `CNI_CONTAINERID ${JSON.stringify(containerId)} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'`,
    );
  }
  const ifName = env.CNI_IFNAME ?? "";
  if (!ifName) throw envError("CNI_IFNAME is not set");
  const ifReason = invalidIfNameReason(ifName);
  if (ifReason) throw envError(`CNI_IFNAME ${JSON.stringify(ifName)} ${ifReason}`);
  const netns = env.CNI_NETNS ?? "";
  if (command !== "DEL") {
    if (!netns) throw envError(`CNI_NETNS is not set; ${command} needs the pod's network namespace`);
    // The daemon opens it from its own working directory: only an absolute path names the same file there.
    if (!netns.startsWith("/")) throw envError(`CNI_NETNS ${netns} is not an absolute path`);
    const exists = await Promise.resolve()
      .then(() => io.pathExists(netns))
      .catch((err: unknown) => {
        throw envError(`CNI_NETNS cannot be checked: ${(err as Error).message}`); // e.g. ENAMETOOLONG
      });
    if (!exists) throw envError(`CNI_NETNS ${netns} does not exist`);
  }
  if (!env.CNI_PATH) throw envError("CNI_PATH is not set");
  const args = parseCniArgs(env.CNI_ARGS);
  const attachment: Attachment = {
    networkName: conf.name,
    containerId,
    ifName,
    netns,
    podNamespace: args.K8S_POD_NAMESPACE ?? "",
    podName: args.K8S_POD_NAME ?? "",
    podUid: args.K8S_POD_UID ?? "",
  };
  return { command, conf, attachment };
}

function requireVersion(conf: NetConf, command: Command, minimum: string): void {
  if (!versionAtLeast(conf.cniVersion, minimum)) {
    throw new CniError(
      cniCodes.incompatibleVersion,
      `${command} needs cniVersion ${minimum} or later; the network config says ${conf.cniVersion}`,
    );
  }
}

const unreachable = (err: unknown) => err instanceof TrellisError && (err.reason === "UNAVAILABLE" || err.reason === "TIMEOUT");

async function dispatch(
  command: Exclude<Command, "VERSION">,
  io: ShimIo,
  stdin: string,
  connect: (socketPath: string) => DaemonClient,
): Promise<void> {
  if (command === "STATUS" || command === "GC") {
    const conf = parseNetConf(stdin);
    requireVersion(conf, command, "1.1.0");
    const daemon = connect(conf.daemonSocket);
    if (command === "GC") {
      // Without the list, GC would release every pod of the network: refuse instead.
      if (!conf.validAttachments) throw configError(`GC needs "cni.dev/valid-attachments" in the network config`);
      await daemon.gc(conf.name, conf.validAttachments);
      return;
    }
    const status = await daemon.status().catch((err: unknown) => {
      if (unreachable(err)) throw new CniError(cniCodes.notAvailable, `trellis cannot add pods: ${(err as Error).message}`);
      throw err;
    });
    if (status.routeState !== RouteState.CURRENT) {
      throw new CniError(cniCodes.limitedConnectivity, `pods may reach other nodes only partly: ${status.detail || "routes are stale"}`);
    }
    return;
  }
  if (command === "CHECK") requireVersion(parseNetConf(stdin), command, "0.4.0");
  const req = await parseCniRequest(command, io, stdin);
  const daemon = connect(req.conf.daemonSocket);
  if (command === "ADD") {
    io.writeStdout(JSON.stringify(toCniResult(await daemon.add(req.attachment), req.conf.cniVersion)));
  } else if (command === "CHECK") {
    await daemon.check(req.attachment);
  } else {
    await daemon.delete(req.attachment).catch(async (err: unknown) => {
      if (err instanceof TrellisError && err.reason === "NOT_FOUND") return;
      if (!unreachable(err)) throw err;
      // The daemon is down: never leave the runtime stuck. The daemon completes this DEL when it starts.
      await io.leavePendingDelete(req.conf.daemonSocket, req.attachment).catch((writeErr: unknown) => {
        throw new TrellisError(
          "UNAVAILABLE",
          `${(err as Error).message}; and could not leave a pending delete: ${(writeErr as Error).message}`,
        );
      });
    });
  }
}

/** One CNI invocation: env + stdin -> daemon call -> stdout; returns the exit code. */
export async function runShim(io: ShimIo, connect: (socketPath: string) => DaemonClient): Promise<number> {
  let cniVersion: string = latestCniVersion;
  try {
    const command = parseCommand(io.env);
    const stdin = await io.readStdin().catch((err: unknown) => {
      throw new CniError(cniCodes.io, `could not read the network config from stdin: ${(err as Error).message}`);
    });
    cniVersion = safeVersion(stdin) ?? latestCniVersion;
    if (command === "VERSION") io.writeStdout(JSON.stringify(versionResult(cniVersion)));
    else await dispatch(command, io, stdin, connect);
    return 0;
  } catch (err) {
    const out = toCniError(err, cniVersion);
    io.writeStdout(JSON.stringify(out));
    io.logError(
      {
        command: io.env.CNI_COMMAND,
        containerId: io.env.CNI_CONTAINERID,
        ifName: io.env.CNI_IFNAME,
        code: out.code,
        err: err instanceof Error ? (err.stack ?? err.message) : String(err),
      },
      "cni call failed",
    );
    return 1;
  }
}

/** The config's cniVersion when it is a supported one, for shaping errors and VERSION answers. */
function safeVersion(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === "string" && (supportedCniVersions as readonly string[]).includes(v) ? v : undefined;
  } catch {
    return undefined;
  }
}
