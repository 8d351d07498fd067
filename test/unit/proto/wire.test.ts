// The descriptor-free codec (proto/gen/**/*_wire.ts, from proto/plugin/protoc-gen-trellis-wire.ts) must
// agree with protoc-gen-es's code on every message: random messages go through one and back through the
// other, both ways.
import { create, type DescField, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { file_trellis_cni_v1_cni } from "../../../proto/gen/trellis/cni/v1/cni_pb.js";
import * as wire from "../../../proto/gen/trellis/cni/v1/cni_wire.js";
import { seeded } from "../../support/prng.js";

type Codec = { encode: (m: unknown) => BinaryWriter; decode: (b: Uint8Array) => Record<string, unknown> };
const codecs = wire as unknown as Record<string, Codec["encode"] | Codec["decode"]>;
const codecOf = (msg: DescMessage): Codec => ({
  encode: codecs[`encode${msg.name}`] as Codec["encode"],
  decode: codecs[`decode${msg.name}`] as Codec["decode"],
});

/** A small deterministic PRNG, so a failure can be replayed from its seed. */
function randomScalar(field: DescField, rand: () => number): unknown {
  const pick = rand();
  if (field.enum) return field.enum.values[Math.floor(pick * field.enum.values.length)]?.number ?? 0;
  const type = field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar") ? field.scalar : undefined;
  switch (type) {
    case 9: // string
      return pick < 0.2
        ? ""
        : ["eth0", "10.244.1.5/24", "ünïcødé ✓", "x".repeat(200), `c-${Math.floor(pick * 1e9)}`][Math.floor(rand() * 5)];
    case 13: // uint32
      return pick < 0.2 ? 0 : Math.floor(rand() * 4294967295);
    case 5: // int32
      return pick < 0.2 ? 0 : Math.floor(rand() * 4294967295) - 2147483648;
    case 3: // int64
      return pick < 0.2 ? 0n : BigInt(Math.floor(rand() * 2 ** 52)) - 2n ** 51n;
    case 8: // bool
      return pick < 0.5;
    default:
      throw new Error(`test does not generate scalar type ${type} (${field.name}); extend randomScalar`);
  }
}

function randomInit(msg: DescMessage, rand: () => number, depth = 0): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const field of msg.fields) {
    const sub = field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") ? field.message : undefined;
    const one = () => (sub ? randomInit(sub, rand, depth + 1) : randomScalar(field, rand));
    if (field.fieldKind === "list") init[field.localName] = Array.from({ length: depth > 2 ? 0 : Math.floor(rand() * 4) }, one);
    else if (sub) init[field.localName] = rand() < 0.3 || depth > 2 ? undefined : one();
    else init[field.localName] = one();
  }
  return init;
}

/** protobuf-es messages carry `$typeName`; the wire codec's plain objects do not. */
function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k]) => k !== "$typeName")
        .map(([k, v]) => [k, plain(v)]),
    );
  }
  return value;
}

const messages = file_trellis_cni_v1_cni.messages;

describe("the generated wire codec agrees with protoc-gen-es", () => {
  it.each(messages.map((m) => [m.name, m] as const))("%s, 200 random messages both ways", (_name, msg) => {
    const { encode, decode } = codecOf(msg);
    expect(encode, `cni_wire.ts has no encode${msg.name}: run npm run generate`).toBeTypeOf("function");
    const rand = seeded(msg.name.length * 7919);
    for (let i = 0; i < 200; i++) {
      const reference = create(msg, randomInit(msg, rand));
      const bytes = toBinary(msg, reference);
      expect(decode(bytes)).toEqual(plain(reference));
      const ours = encode(plain(reference)).finish();
      expect(fromBinary(msg, ours)).toEqual(reference);
    }
  });

  it("skips fields it does not know and accepts packed or unpacked repeated scalars", () => {
    const w = new BinaryWriter();
    w.tag(99, WireType.LengthDelimited).string("from a newer daemon");
    w.tag(2, WireType.Varint).int32(wire.RouteState.STALE);
    w.tag(1, WireType.LengthDelimited).string("10.244.1.0/24");
    expect(wire.decodeGetStatusResponse(w.finish())).toEqual({ subnet: "10.244.1.0/24", routeState: 2, detail: "", protocolVersion: 0 });
  });

  it("rejects a field with the wrong wire type, naming it", () => {
    const w = new BinaryWriter();
    w.tag(1, WireType.Varint).uint32(5);
    expect(() => wire.decodeGetStatusResponse(w.finish())).toThrow(/trellis\.cni\.v1\.GetStatusResponse\.subnet: wire type 0, expected 2/);
  });

  it("names every CniService method with its gRPC path", () => {
    expect(Object.values(wire.CniService).map((m) => m.path)).toEqual(
      file_trellis_cni_v1_cni.services[0]?.methods.map((m) => `/trellis.cni.v1.CniService/${m.name}`),
    );
  });
});
