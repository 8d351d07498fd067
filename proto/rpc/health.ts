// grpc.health.v1 on every Trellis server.
import { create, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";

/** grpc.health.v1: "" and every served service report `ready()`; other names are NOT_FOUND. */
export function addHealthService(router: ConnectRouter, services: readonly DescService[], ready: () => boolean): void {
  const known = new Set(["", ...services.map((s) => s.typeName)]);
  const status = (service: string) => {
    if (!known.has(service)) throw new ConnectError(`unknown service ${service}`, Code.NotFound);
    const s = ready() ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING;
    return create(HealthCheckResponseSchema, { status: s });
  };
  router.service(Health, {
    check: (req) => status(req.service),
    async *watch(req, ctx) {
      let last: HealthCheckResponse_ServingStatus | undefined;
      while (!ctx.signal.aborted) {
        const now = status(req.service);
        if (now.status !== last) yield now;
        last = now.status;
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    },
  });
}
