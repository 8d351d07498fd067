import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { inNetns } from "./exec.js";

/** What a runtime knows about one attachment. */
export interface RuntimeAttachment {
  readonly containerId: string;
  readonly netnsPath: string;
  readonly ifName: string;
  readonly args?: string;
}

export interface PluginRun {
  readonly plugin: string;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly json?: Record<string, unknown>;
}

export interface ConflistRun {
  readonly code: number;
  /** The last plugin's result (ADD), or undefined. */
  readonly result?: Record<string, unknown>;
  readonly runs: PluginRun[];
}

interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string; capabilities?: Record<string, boolean> }>;
}

export async function readConflist(path: string): Promise<Conflist> {
  return JSON.parse(await readFile(path, "utf8")) as Conflist;
}

/**
 * Executes a conflist the way libcni does: ADD runs the plugins in order, each given the previous one's
 * result as `prevResult`; DEL runs them in reverse and CHECK in order, both given the cached ADD result;
 * `runtimeConfig` carries only the capabilities a plugin declares. Plugins run in the node's namespace.
 */
export async function execConflist(options: {
  nodeNetns: string;
  binDir: string;
  conflist: Conflist;
  command: "ADD" | "DEL" | "CHECK" | "GC" | "STATUS";
  attachment?: RuntimeAttachment;
  prevResult?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  extra?: Record<string, unknown>;
}): Promise<ConflistRun> {
  const { conflist, command, attachment } = options;
  const plugins = command === "DEL" ? [...conflist.plugins].reverse() : conflist.plugins;
  let prevResult = options.prevResult;
  const runs: PluginRun[] = [];
  for (const plugin of plugins) {
    const caps = plugin.capabilities ?? {};
    const runtimeConfig = Object.fromEntries(Object.entries(options.runtimeConfig ?? {}).filter(([k]) => caps[k]));
    const conf: Record<string, unknown> = {
      ...plugin,
      cniVersion: conflist.cniVersion,
      name: conflist.name,
      ...(Object.keys(runtimeConfig).length > 0 ? { runtimeConfig } : {}),
      ...(prevResult && command !== "GC" && command !== "STATUS" ? { prevResult } : {}),
      ...options.extra,
    };
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      CNI_COMMAND: command,
      CNI_PATH: options.binDir,
      ...(attachment
        ? {
            CNI_CONTAINERID: attachment.containerId,
            CNI_NETNS: attachment.netnsPath,
            CNI_IFNAME: attachment.ifName,
            CNI_ARGS: attachment.args ?? "",
          }
        : {}),
    };
    const res = await inNetns(options.nodeNetns, join(options.binDir, plugin.type), [], {
      stdin: JSON.stringify(conf),
      env,
      timeoutMs: 30_000,
    });
    let json: Record<string, unknown> | undefined;
    try {
      json = res.stdout.trim() ? (JSON.parse(res.stdout) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    runs.push({ plugin: plugin.type, code: res.code, stdout: res.stdout, stderr: res.stderr, json });
    if (res.code !== 0) return { code: res.code, runs };
    if (command === "ADD") prevResult = json;
  }
  return { code: 0, result: command === "ADD" ? prevResult : undefined, runs };
}
