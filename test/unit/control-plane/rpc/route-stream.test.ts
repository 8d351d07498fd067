// The pure parts of WatchRoutes on the bare HTTP/2 stream (control-plane/rpc/route-stream.ts): framing,
// gRPC's timeout header and its message encoding. The wire itself: test/integration/route-stream-wire.test.ts.
import { create, fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { frameOf, grpcMessage, parseGrpcTimeout } from "../../../../control-plane/rpc/route-stream.js";
import { RouteSchema, WatchRoutesResponseSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";

describe("route stream framing", () => {
  it("a message is framed once (uncompressed flag, big-endian length, bytes) and the frame is shared by every stream", () => {
    const message = create(WatchRoutesResponseSchema, {
      revision: 9n,
      epoch: 3n,
      routes: [create(RouteSchema, { nodeName: "n1", subnet: "10.244.1.0/24", nodeIp: "192.168.1.11" })],
    });
    const frame = frameOf(message);
    expect(frame[0]).toBe(0);
    expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
    expect(fromBinary(WatchRoutesResponseSchema, frame.subarray(5))).toEqual(message);
    expect(frameOf(message)).toBe(frame);
    expect(frameOf(create(WatchRoutesResponseSchema, { revision: 9n, epoch: 3n }))).not.toBe(frame);
  });

  it("grpc-timeout in every unit; anything else is refused, not ignored", () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    expect(parseGrpcTimeout("2H")).toBe(7_200_000);
    expect(parseGrpcTimeout("3M")).toBe(180_000);
    expect(parseGrpcTimeout("5S")).toBe(5_000);
    expect(parseGrpcTimeout("250m")).toBe(250);
    expect(parseGrpcTimeout("1500u")).toBe(1.5);
    expect(parseGrpcTimeout("2000000n")).toBe(2);
    for (const bad of ["", "5", "5s", "123456789S", "-1S", "1.5S"]) {
      expect(() => parseGrpcTimeout(bad), bad).toThrow(/is not a gRPC timeout/);
    }
  });

  it("grpc-message is percent-encoded outside printable ASCII, and % itself", () => {
    expect(grpcMessage('node n1 may not act for node "n2"')).toBe('node n1 may not act for node "n2"');
    expect(grpcMessage("100% sure\nnext")).toBe("100%25 sure%0Anext");
    expect(grpcMessage("nœud")).toBe("n%C5%93ud");
  });
});
