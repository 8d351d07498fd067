// The shim's side of CniService: the generated wire codec over one unary gRPC call per command.
import type { BinaryWriter } from "@bufbuild/protobuf/wire";
import { reasonMetadataKey, reasonOfStatus, TrellisError } from "../proto/core/errors.js";
import { protocolVersion } from "../proto/core/protocol.js";
import { CniService } from "../proto/gen/trellis/cni/v1/cni_wire.js";
import { type Dial, unaryCall } from "./grpc-unary.js";
import type { DaemonClient } from "./skel.js";

/**
 * How long each command waits for the daemon once it is connected. A busy daemon is worth waiting for:
 * the runtime's own bound is kubelet's 2-minute runtime request timeout, and a killed shim helps nobody.
 * A daemon that is down is found at connect, at once (code 11), whatever these say.
 */
export const deadlinesMs = { add: 90_000, delete: 60_000, check: 30_000, gc: 90_000, status: 10_000 } as const;

interface Method<Req, Res> {
  readonly path: string;
  encode(m: Req): BinaryWriter;
  decode(bytes: Uint8Array): Res;
}

export function createDaemonClient(
  socketPath: string,
  dial: Dial,
  deadlines: Record<keyof typeof deadlinesMs, number> = deadlinesMs,
): DaemonClient {
  const what = `node daemon at ${socketPath}`;
  async function call<Req, Res>(method: Method<Req, Res>, request: Req, timeoutMs: number): Promise<Res> {
    const reply = await unaryCall(dial, socketPath, method.path, method.encode(request).finish(), { timeoutMs });
    if (reply.status !== 0 || !reply.body) {
      const sent = reply.metadata.get(reasonMetadataKey);
      const reason = reasonOfStatus(reply.status, sent);
      // A reason the daemon chose comes with its own message; a transport failure says where it happened.
      throw new TrellisError(reason, sent === reason ? reply.message : `${what}: ${reply.message}`);
    }
    try {
      return method.decode(reply.body);
    } catch (err) {
      throw new TrellisError("INTERNAL", `${what} sent a reply the shim cannot decode: ${(err as Error).message}`);
    }
  }
  return {
    add: (attachment) => call(CniService.addAttachment, { protocolVersion, attachment }, deadlines.add),
    delete: async (attachment) => void (await call(CniService.deleteAttachment, { protocolVersion, attachment }, deadlines.delete)),
    check: async (attachment) => void (await call(CniService.checkAttachment, { protocolVersion, attachment }, deadlines.check)),
    gc: async (networkName, valid) =>
      void (await call(CniService.garbageCollect, { protocolVersion, networkName, validAttachments: [...valid] }, deadlines.gc)),
    status: () => call(CniService.getStatus, { protocolVersion }, deadlines.status),
  };
}
