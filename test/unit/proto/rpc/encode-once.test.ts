import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RouteSchema, WatchRoutesResponseSchema } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { encodeOnce, preEncoded } from "../../../../proto/rpc/encode-once.js";

const routes = (n: number) =>
  Array.from({ length: n }, (_, i) => create(RouteSchema, { nodeName: `n${i}`, subnet: `10.244.${i}.0/24`, nodeIp: `192.168.1.${i}` }));

describe("preEncoded", () => {
  it.each([
    ["a snapshot", create(WatchRoutesResponseSchema, { revision: 42n, snapshot: true, routes: routes(200), epoch: 7n })],
    ["only the last field set", create(WatchRoutesResponseSchema, { decidedAtMs: 1n })],
    ["a default message", create(WatchRoutesResponseSchema)],
  ])("%s serializes to the same bytes, which decode to the same message", (_, message) => {
    const bytes = toBinary(WatchRoutesResponseSchema, message);
    const shell = preEncoded(WatchRoutesResponseSchema, message);
    expect(Buffer.from(toBinary(WatchRoutesResponseSchema, shell))).toEqual(Buffer.from(bytes));
    expect(fromBinary(WatchRoutesResponseSchema, toBinary(WatchRoutesResponseSchema, shell))).toEqual(message);
  });

  it("holds the encoding, not the message: changing the message afterwards changes nothing sent", () => {
    const message = create(WatchRoutesResponseSchema, { revision: 1n, routes: routes(2) });
    const shell = preEncoded(WatchRoutesResponseSchema, message);
    message.revision = 2n;
    expect(fromBinary(WatchRoutesResponseSchema, toBinary(WatchRoutesResponseSchema, shell)).revision).toBe(1n);
  });
});

describe("encodeOnce", () => {
  it("encodes each message object once, however many streams send it", () => {
    const once = encodeOnce(WatchRoutesResponseSchema);
    const a = create(WatchRoutesResponseSchema, { revision: 1n });
    const b = create(WatchRoutesResponseSchema, { revision: 1n });
    expect(once(a)).toBe(once(a));
    expect(once(b)).not.toBe(once(a));
  });
});
