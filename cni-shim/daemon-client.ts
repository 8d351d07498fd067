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
  return {
    async add(attachment) {
      try {
        return await client.addAttachment({ protocolVersion, attachment }, { timeoutMs });
      } catch (err) {
        throw fromConnectError(err, what);
      }
    },
    async delete(attachment) {
      try {
        await client.deleteAttachment({ protocolVersion, attachment }, { timeoutMs });
      } catch (err) {
        throw fromConnectError(err, what);
      }
    },
  };
}
