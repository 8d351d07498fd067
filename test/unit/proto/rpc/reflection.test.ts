import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type ServerReflectionRequest, ServerReflectionRequestSchema } from "../../../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import { AdminService } from "../../../../proto/gen/trellis/admin/v1/admin_pb.js";
import { AllocationRecordSchema, CniService } from "../../../../proto/gen/trellis/cni/v1/cni_pb.js";
import { NodeService } from "../../../../proto/gen/trellis/controlplane/v1/node_pb.js";
import { reflectionAnswerer } from "../../../../proto/rpc/reflection.js";

const answer = reflectionAnswerer([AdminService, NodeService]);
const ask = (messageRequest: ServerReflectionRequest["messageRequest"]) =>
  answer(create(ServerReflectionRequestSchema, { host: "localhost", messageRequest }));

/** The decoded files of a fileDescriptorResponse, in order; fails the test for any other answer. */
function filesOf(res: ReturnType<typeof answer>) {
  const r = res.messageResponse;
  if (r.case !== "fileDescriptorResponse") throw new Error(`expected a fileDescriptorResponse, got ${r.case ?? "nothing"}`);
  return r.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

describe("reflectionAnswerer", () => {
  it("listServices names the given services", () => {
    const r = ask({ case: "listServices", value: "*" }).messageResponse;
    expect(r.case).toBe("listServicesResponse");
    if (r.case !== "listServicesResponse") return;
    expect(r.value.service.map((s) => s.name)).toEqual(["trellis.admin.v1.AdminService", "trellis.controlplane.v1.NodeService"]);
  });

  it("echoes the host and the request", () => {
    const res = ask({ case: "listServices", value: "" });
    expect(res.validHost).toBe("localhost");
    expect(res.originalRequest?.messageRequest.case).toBe("listServices");
  });

  it.each([
    "trellis.admin.v1.AdminService",
    ".trellis.admin.v1.AdminService",
    "trellis.admin.v1.AdminService.ListNodes",
    "trellis.admin.v1.ListNodesResponse",
  ])("fileContainingSymbol %s: admin.proto first, then its dependencies", (symbol) => {
    const files = filesOf(ask({ case: "fileContainingSymbol", value: symbol }));
    expect(files[0]?.name).toBe("trellis/admin/v1/admin.proto");
    expect(files[0]?.package).toBe("trellis.admin.v1");
    expect(files[0]?.dependency).toContain("google/protobuf/timestamp.proto");
    expect(files[0]?.service.map((s) => s.name)).toEqual(["AdminService"]);
    expect(files.map((f) => f.name)).toContain("google/protobuf/timestamp.proto");
    expect(new Set(files.map((f) => f.name)).size).toBe(files.length);
  });

  it("fileByFilename returns the file", () => {
    const files = filesOf(ask({ case: "fileByFilename", value: "trellis/controlplane/v1/node.proto" }));
    expect(files[0]?.name).toBe("trellis/controlplane/v1/node.proto");
    expect(files[0]?.service.map((s) => s.name)).toEqual(["NodeService", "JoinService"]);
  });

  // node.proto imports trellis/cni/v1/cni.proto (AllocationRecord), so a client that resolves NodeService
  // must be able to resolve the types it uses from there.
  it.each([AllocationRecordSchema.typeName, `.${AllocationRecordSchema.typeName}`, "trellis.cni.v1.Attachment"])(
    "fileContainingSymbol %s of a dependency of a served service: cni.proto and its dependencies",
    (symbol) => {
      const files = filesOf(ask({ case: "fileContainingSymbol", value: symbol }));
      expect(files[0]?.name).toBe("trellis/cni/v1/cni.proto");
      expect(files[0]?.messageType.map((m) => m.name)).toContain("AllocationRecord");
      expect(new Set(files.map((f) => f.name)).size).toBe(files.length);
    },
  );

  it("a served service's file comes with the files it imports", () => {
    const files = filesOf(ask({ case: "fileContainingSymbol", value: NodeService.typeName }));
    expect(files[0]?.name).toBe("trellis/controlplane/v1/node.proto");
    expect(files[0]?.dependency).toContain("trellis/cni/v1/cni.proto");
    expect(files.map((f) => f.name)).toContain("trellis/cni/v1/cni.proto");
  });

  it("fileByFilename resolves a dependency's file", () => {
    expect(filesOf(ask({ case: "fileByFilename", value: "trellis/cni/v1/cni.proto" }))[0]?.name).toBe("trellis/cni/v1/cni.proto");
  });

  it("a dependency's file does not make its services served: listServices names only the given ones", () => {
    const r = ask({ case: "listServices", value: "*" }).messageResponse;
    if (r.case !== "listServicesResponse") throw new Error(`expected a listServicesResponse, got ${r.case ?? "nothing"}`);
    expect(r.value.service.map((s) => s.name)).not.toContain(CniService.typeName);
  });

  it("a symbol of a file that is neither served nor a dependency is NOT_FOUND", () => {
    const r = reflectionAnswerer([AdminService])(
      create(ServerReflectionRequestSchema, {
        host: "localhost",
        messageRequest: { case: "fileContainingSymbol", value: AllocationRecordSchema.typeName },
      }),
    ).messageResponse;
    expect(r.case).toBe("errorResponse");
    if (r.case !== "errorResponse") return;
    expect(r.value.errorCode).toBe(5);
  });

  it.each<[string, ServerReflectionRequest["messageRequest"]]>([
    ["an unknown symbol", { case: "fileContainingSymbol", value: "trellis.admin.v1.NoSuchService" }],
    ["an unknown symbol in a dependency's package", { case: "fileContainingSymbol", value: "trellis.cni.v1.NoSuchMessage" }],
    ["an unknown package", { case: "fileContainingSymbol", value: "trellis.nope.v1.NopeService" }],
    ["an unknown file", { case: "fileByFilename", value: "nope.proto" }],
    ["extensions of an unknown type", { case: "allExtensionNumbersOfType", value: "nope.Type" }],
  ])("%s is an errorResponse with code 5 (NOT_FOUND)", (_what, messageRequest) => {
    const r = ask(messageRequest).messageResponse;
    expect(r.case).toBe("errorResponse");
    if (r.case !== "errorResponse") return;
    expect(r.value.errorCode).toBe(5);
    expect(r.value.errorMessage).toMatch(/not found/);
  });
});
