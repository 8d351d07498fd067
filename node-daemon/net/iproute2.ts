import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { TrellisError } from "../../proto/common/errors.js";
import { trellisRouteProtocol } from "../../proto/common/protocol.js";
import type { BridgePlan, VethPlan } from "../cni/plan.js";
import type { KernelRoute, LinkInfo, Netlink, OwnedRoute, VethState } from "./netlink.js";

interface ExecFailure extends Error {
  readonly stderr?: string;
  readonly code?: number | string;
}

/** Runs `ip` (optionally inside a netns through nsenter, never setns in-process); stdin feeds `-batch -`. */
function run(args: readonly string[], options: { netns?: string; stdin?: string } = {}): Promise<string> {
  const [cmd, argv] = options.netns ? ["nsenter", [`--net=${options.netns}`, "ip", ...args]] : ["ip", [...args]];
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, argv, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const failure = Object.assign(err, { stderr }) as ExecFailure;
      const detail =
        stderr
          .trim()
          .split("\n")
          .filter((l) => !l.startsWith("Command failed"))
          .join("; ") || err.message;
      reject(new TrellisError("KERNEL", `${cmd} ${argv.join(" ")}: ${detail}`, { cause: failure }));
    });
    if (options.stdin !== undefined) child.stdin?.end(options.stdin);
  });
}

const batch = (lines: readonly string[], netns?: string) => run(["-batch", "-"], { stdin: `${lines.join("\n")}\n`, netns });

function stderrOf(err: unknown): string {
  return err instanceof TrellisError ? String((err.cause as ExecFailure | undefined)?.stderr ?? "") : "";
}

const notFound = (err: unknown) => /Cannot find device|does not exist|No such device|No such process/.test(stderrOf(err));

/** Netlink through Debian's iproute2: one `ip -batch` per namespace touched. */
export class IpRoute2Netlink implements Netlink {
  async ensureBridge(bridge: BridgePlan): Promise<void> {
    const links = await this.listLinks();
    const lines: string[] = [];
    if (!links.some((l) => l.name === bridge.name)) lines.push(`link add ${bridge.name} type bridge`);
    lines.push(`link set ${bridge.name} address ${bridge.mac} mtu ${bridge.mtu} up`);
    await batch(lines);
    const addrs = JSON.parse(await run(["-json", "addr", "show", "dev", bridge.name])) as Array<{
      addr_info?: Array<{ local: string; prefixlen: number; family: string }>;
    }>;
    const has = addrs[0]?.addr_info?.some((a) => a.family === "inet" && `${a.local}/${a.prefixlen}` === bridge.address);
    if (!has) await run(["addr", "add", bridge.address, "dev", bridge.name]);
  }

  async enableIpv4Forwarding(): Promise<void> {
    try {
      await writeFile("/proc/sys/net/ipv4/ip_forward", "1\n");
    } catch (err) {
      throw new TrellisError("KERNEL", "could not enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)", { cause: err });
    }
  }

  async addVeth(v: VethPlan): Promise<void> {
    try {
      await batch([
        `link add ${v.hostName} mtu ${v.mtu} address ${v.hostMac} type veth peer name ${v.podIfName} mtu ${v.mtu} address ${v.podMac} netns ${v.netns}`,
        `link set ${v.hostName} master ${v.bridge} up`,
      ]);
    } catch (err) {
      if (/File exists/.test(stderrOf(err))) {
        const hostExists = (await this.listLinks()).some((l) => l.name === v.hostName);
        throw new TrellisError(
          "ALREADY_EXISTS",
          hostExists
            ? `host interface ${v.hostName} already exists: the attachment is being set up by another call`
            : `interface ${v.podIfName} already exists in ${v.netns}; choose another CNI_IFNAME or delete it first`,
          { cause: err },
        );
      }
      // The first line may have succeeded: never leave a half-made pair behind.
      await this.deleteLink(v.hostName).catch(() => undefined);
      throw err;
    }
    await batch(
      [
        `addr add ${v.podAddress} dev ${v.podIfName}`,
        `link set ${v.podIfName} up`,
        `route add default via ${v.gateway} dev ${v.podIfName}`,
      ],
      v.netns,
    );
  }

  async inspectVeth(v: VethPlan): Promise<VethState> {
    type Link = {
      ifname: string;
      master?: string;
      flags?: string[];
      addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
    };
    const isUp = (l: Link) => (l.flags ?? []).includes("UP");
    const [host, pod, routes] = await Promise.all([
      run(["-json", "link", "show", "dev", v.hostName]).then(
        (out) => (JSON.parse(out) as Link[])[0],
        (err: unknown) => (notFound(err) ? undefined : Promise.reject(err)),
      ),
      run(["-json", "addr", "show", "dev", v.podIfName], { netns: v.netns }).then(
        (out) => (JSON.parse(out) as Link[])[0],
        () => undefined,
      ),
      run(["-json", "route", "show", "default"], { netns: v.netns }).then(
        (out) => JSON.parse(out) as Array<{ gateway?: string; dev?: string }>,
        () => [],
      ),
    ]);
    return {
      host: host && { master: host.master, up: isUp(host) },
      pod: pod && {
        up: isUp(pod),
        addresses: (pod.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`),
        defaultVia: routes.find((r) => r.dev === v.podIfName)?.gateway,
      },
    };
  }

  async deleteLink(name: string): Promise<boolean> {
    try {
      await run(["link", "del", name]);
      return true;
    } catch (err) {
      if (notFound(err)) return false;
      throw err;
    }
  }

  async listLinks(): Promise<LinkInfo[]> {
    const out = JSON.parse(await run(["-json", "-details", "link", "show"])) as Array<{
      ifname: string;
      master?: string;
      linkinfo?: { info_kind?: string };
    }>;
    return out.map((l) => ({ name: l.ifname, master: l.master, kind: l.linkinfo?.info_kind }));
  }

  async listRoutes(): Promise<KernelRoute[]> {
    const out = JSON.parse(await run(["-json", "route", "show", "table", "main"])) as Array<{
      dst: string;
      gateway?: string;
      protocol?: string;
    }>;
    return out.map((r) => ({
      dst: r.dst === "default" ? "0.0.0.0/0" : r.dst.includes("/") ? r.dst : `${r.dst}/32`,
      via: r.gateway ?? "",
      owned: r.protocol === String(trellisRouteProtocol),
    }));
  }

  async applyRoutes(replace: readonly OwnedRoute[], remove: readonly OwnedRoute[]): Promise<void> {
    const proto = String(trellisRouteProtocol);
    const lines = [
      ...remove.map((r) => `route del ${r.dst} proto ${proto}`),
      ...replace.map((r) => `route replace ${r.dst} via ${r.via} proto ${proto}`),
    ];
    if (lines.length > 0) await batch(lines);
  }
}
