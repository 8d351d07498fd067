// Arguments of trellis-ca, the cluster CA's command line (DESIGN.md §6). Pure.
import { TrellisError } from "../../proto/core/errors.js";
import { parseFlags, parseIntFlag } from "../../proto/core/flags.js";
import { checkIdentity, type Identity, type IdentityKind, identityKinds } from "../../proto/core/identity.js";

export const caHelp = `Usage: trellis-ca init  --dir DIR [--days N] [--admin NAME --out DIR]
       trellis-ca issue --dir DIR --kind KIND --name NAME --out DIR [--hours N] [--dns NAMES] [--ip ADDRESSES]

The Trellis cluster CA. Every control-plane replica, node daemon and operator holds a certificate it
signed; the certificate's one URI SAN, spiffe://trellis/KIND/NAME, says who it speaks for.

Commands:
  init        create the CA in --dir: ca.crt (give it to every node and operator) and ca.key (mode 0600;
              with --admin, also the first admin's credential in --out;
              keep it on the control-plane hosts only). Refuses to overwrite an existing CA.
  issue       make a key and a certificate signed by the CA in --dir, written to --out as
              KIND-NAME.key (mode 0600) and KIND-NAME.crt, for an operator or a control-plane replica.

Flags:
  --dir DIR          the CA's directory
  --days N           init: the CA's lifetime in days (default 3650)
  --admin NAME       init: also issue the first admin credential (12 h) to --out
  --kind KIND        issue: admin, viewer or control-plane (nodes join with a token instead: the
                     control plane accepts only node certificates it issued itself)
  --name NAME        issue: the operator's name, the node name, or the replica's name
  --out DIR          issue: where to write the key and certificate
  --hours N          issue: the certificate's lifetime in hours (default 12 for operators, 8760 for a
                     control-plane replica)
  --dns NAMES        issue, control-plane only: comma-separated DNS names the replica serves under
  --ip ADDRESSES     issue, control-plane only: comma-separated addresses the replica serves on
  -h, --help         print this help and exit
`;

export type CaCommand =
  | {
      readonly command: "init";
      readonly dir: string;
      readonly days: number;
      /** The first admin's credential (12 h), written to `out`. */
      readonly admin?: { readonly identity: Identity; readonly out: string };
    }
  | {
      readonly command: "issue";
      readonly dir: string;
      readonly out: string;
      readonly identity: Identity;
      readonly hours: number;
      readonly server?: { readonly dnsNames: string[]; readonly ips: string[] };
    };

const list = (text: string) =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

export function parseCaArgs(argv: readonly string[]): CaCommand | "help" {
  const [command, ...rest] = argv;
  if (command === undefined || command === "-h" || command === "--help") return "help";
  const { values } = parseFlags(rest, {
    dir: { type: "string", default: "" },
    days: { type: "string", default: "3650" },
    kind: { type: "string", default: "" },
    name: { type: "string", default: "" },
    out: { type: "string", default: "" },
    hours: { type: "string", default: "" },
    dns: { type: "string", default: "" },
    ip: { type: "string", default: "" },
    admin: { type: "string", default: "" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  if (!values.dir) throw new TrellisError("INVALID_ARGUMENT", "--dir is required: the CA's directory");
  if (command === "init") {
    const days = parseIntFlag(values.days, "--days", 1, 36_500);
    if (!values.admin) return { command, dir: values.dir, days };
    if (!values.out) throw new TrellisError("INVALID_ARGUMENT", "--admin needs --out: where to write the admin's key and certificate");
    return { command, dir: values.dir, days, admin: { identity: checkIdentity({ kind: "admin", name: values.admin }), out: values.out } };
  }
  if (command !== "issue")
    throw new TrellisError("INVALID_ARGUMENT", `unknown command ${JSON.stringify(command)}; use init or issue (see --help)`);
  if (values.kind === "node") {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      "--kind node: nodes join with a token (AdminService.CreateJoinToken, then the daemon's --join-token-file); the control plane accepts only node certificates it issued itself",
    );
  }
  if (!(identityKinds as readonly string[]).includes(values.kind)) {
    throw new TrellisError("INVALID_ARGUMENT", `--kind must be one of admin, viewer, control-plane`);
  }
  if (!values.out) throw new TrellisError("INVALID_ARGUMENT", "--out is required: where to write the key and certificate");
  const identity = checkIdentity({ kind: values.kind as IdentityKind, name: values.name });
  const operator = identity.kind === "admin" || identity.kind === "viewer";
  const hours = values.hours ? parseIntFlag(values.hours, "--hours", 1, 24 * 400) : operator ? 12 : 24 * 365;
  const dnsNames = list(values.dns);
  const ips = list(values.ip);
  if ((dnsNames.length > 0 || ips.length > 0) && identity.kind !== "control-plane") {
    throw new TrellisError("INVALID_ARGUMENT", "--dns and --ip are for control-plane certificates only");
  }
  for (const ip of ips) {
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) && !ip.includes(":"))
      throw new TrellisError("INVALID_ARGUMENT", `--ip ${JSON.stringify(ip)} is not an address`);
  }
  return {
    command,
    dir: values.dir,
    out: values.out,
    identity,
    hours,
    ...(identity.kind === "control-plane" ? { server: { dnsNames, ips } } : {}),
  };
}
