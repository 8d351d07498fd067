import net from "node:net";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { protocolVersion } from "../proto/common/protocol.js";
import { fromConnectError } from "../proto/common/rpc.js";
import { CniService } from "../proto/gen/trellis/cni/v1/cni_pb.js";
import type { DaemonClient } from "./skel.js";

/** gRPC over the daemon's unix socket; every call has a deadline so a stuck daemon never hangs the runtime. */
export function createDaemonClient(socketPath: string, timeoutMs = 10_000): DaemonClient {
  const transport = createGrpcTransport({
    baseUrl: "http://trellis-daemon",
    nodeOptions: { createConnection: () => net.connect(socketPath) },
  });
  const client = createClient(CniService, transport);
  const what = `node daemon at ${socketPath}`;
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw fromConnectError(err, what);
    }
  };
  return {
    add: (attachment) => call(() => client.addAttachment({ protocolVersion, attachment }, { timeoutMs })),
    delete: (attachment) => call(async () => void (await client.deleteAttachment({ protocolVersion, attachment }, { timeoutMs }))),
    check: (attachment) => call(async () => void (await client.checkAttachment({ protocolVersion, attachment }, { timeoutMs }))),
    gc: (networkName, validAttachments) =>
      call(
        async () =>
          void (await client.garbageCollect({ protocolVersion, networkName, validAttachments: [...validAttachments] }, { timeoutMs })),
      ),
    status: () => call(() => client.getStatus({ protocolVersion }, { timeoutMs })),
  };
}
