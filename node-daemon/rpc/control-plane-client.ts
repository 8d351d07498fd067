import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { JoinService, NodeService } from "../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { fromConnectError } from "../../proto/rpc/connect-errors.js";
import type { ControlPlaneApi } from "../control/control-client.js";

/** A NodeService client for one control-plane replica ("host:port"), with errors turned into reasons. */
export function createControlPlaneApi(address: string, tls?: { ca: string; cert: string; key: string }): ControlPlaneApi {
  const transport = tls
    ? createGrpcTransport({ baseUrl: `https://${address}`, nodeOptions: { ca: tls.ca, cert: tls.cert, key: tls.key } })
    : createGrpcTransport({ baseUrl: `http://${address}` });
  const client = createClient(NodeService, transport);
  const what = `control plane ${address}`;
  const unary =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args);
      } catch (err) {
        throw fromConnectError(err, what);
      }
    };
  return {
    registerNode: unary((req, options) => client.registerNode(req, options)),
    heartbeat: unary((req, options) => client.heartbeat(req, options)),
    deregisterNode: unary((req, options) => client.deregisterNode(req, options)),
    syncAllocations: unary((req, options) => client.syncAllocations(req, options)),
    listNodeAllocations: unary((req, options) => client.listNodeAllocations(req, options)),
    reportRoutes: unary((req, options) => client.reportRoutes(req, options)),
    renewCertificate: unary((req, options) => client.renewCertificate(req, options)),
    async *watchRoutes(req, options) {
      try {
        yield* client.watchRoutes(req, options);
      } catch (err) {
        throw fromConnectError(err, what);
      }
    },
  };
}

/**
 * JoinService.Join on one replica's join port ("host:port"): server-only TLS (the daemon has no
 * certificate yet), the control plane checked against the cluster CA.
 */
export function createJoinApi(address: string, caPem: string) {
  const client = createClient(JoinService, createGrpcTransport({ baseUrl: `https://${address}`, nodeOptions: { ca: caPem } }));
  return async (token: string, nodeName: string, csrPem: string, signal: AbortSignal): Promise<string> => {
    try {
      return (await client.join({ token, nodeName, csrPem }, { signal, timeoutMs: 10_000 })).certificatePem;
    } catch (err) {
      throw fromConnectError(err, `join via control plane ${address}`);
    }
  };
}
