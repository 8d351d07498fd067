// gRPC server reflection (v1 and v1alpha) from the generated descriptors, so grpcurl and buf curl need no
// .proto files.
import { create, type DescFile, type DescMessage, type DescService, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** gRPC server reflection, v1 and v1alpha, answered from the generated descriptors. */
export function addReflectionService(router: ConnectRouter, services: readonly DescService[]): void {
  const answer = reflectionAnswerer([...services, Health, reflectionV1.ServerReflection]);
  router.service(reflectionV1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(req);
    },
  });
  router.service(reflectionV1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const res = answer(convert(reflectionV1.ServerReflectionRequestSchema, reflectionV1alpha.ServerReflectionRequestSchema, req));
        yield convert(reflectionV1alpha.ServerReflectionResponseSchema, reflectionV1.ServerReflectionResponseSchema, res);
      }
    },
  });
}

/** v1 and v1alpha messages are wire-identical. */
function convert<To extends DescMessage, From extends DescMessage>(to: To, from: From, msg: MessageShape<From>): MessageShape<To> {
  return fromBinary(to, toBinary(from, msg));
}

type ReflectionRequest = reflectionV1.ServerReflectionRequest;
type ReflectionResponse = reflectionV1.ServerReflectionResponse;

/** Pure: a reflection request -> its response, over the files that define `services`. */
export function reflectionAnswerer(services: readonly DescService[]): (req: ReflectionRequest) => ReflectionResponse {
  const files = new Map<string, DescFile>();
  const addFile = (file: DescFile): void => {
    if (files.has(file.name)) return;
    files.set(file.name, file);
    file.dependencies.forEach(addFile);
  };
  for (const s of services) addFile(s.file);
  const symbols = new Map<string, DescFile>();
  for (const file of files.values()) {
    for (const s of file.services) {
      symbols.set(s.typeName, file);
      for (const m of s.methods) symbols.set(`${s.typeName}.${m.name}`, file);
    }
    const addMessages = (messages: DescFile["messages"]) => {
      for (const m of messages) {
        symbols.set(m.typeName, file);
        addMessages(m.nestedMessages);
        for (const e of m.nestedEnums) symbols.set(e.typeName, file);
      }
    };
    addMessages(file.messages);
    for (const e of file.enums) symbols.set(e.typeName, file);
  }
  const withDeps = (file: DescFile): Uint8Array[] => {
    const out = new Map<string, Uint8Array>();
    const walk = (f: DescFile) => {
      if (out.has(f.name)) return;
      out.set(f.name, toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(walk);
    };
    walk(file);
    return [...out.values()];
  };
  const fileNameOf = (f: DescFile) => f.proto.name;
  const byFileName = new Map([...files.values()].map((f) => [fileNameOf(f), f]));
  const error = (code: Code, message: string): ReflectionResponse["messageResponse"] => ({
    case: "errorResponse",
    value: create(reflectionV1.ErrorResponseSchema, { errorCode: code, errorMessage: message }),
  });
  const fileResponse = (file: DescFile | undefined, what: string): ReflectionResponse["messageResponse"] =>
    file
      ? {
          case: "fileDescriptorResponse",
          value: create(reflectionV1.FileDescriptorResponseSchema, { fileDescriptorProto: withDeps(file) }),
        }
      : error(Code.NotFound, `${what} not found`);

  return (req) => {
    const r = req.messageRequest;
    let messageResponse: ReflectionResponse["messageResponse"];
    switch (r.case) {
      case "listServices":
        messageResponse = {
          case: "listServicesResponse",
          value: create(reflectionV1.ListServiceResponseSchema, {
            service: services.map((s) => create(reflectionV1.ServiceResponseSchema, { name: s.typeName })),
          }),
        };
        break;
      case "fileByFilename":
        messageResponse = fileResponse(byFileName.get(r.value), `file ${r.value}`);
        break;
      case "fileContainingSymbol":
        messageResponse = fileResponse(symbols.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
        break;
      case "allExtensionNumbersOfType":
        messageResponse = symbols.has(r.value)
          ? { case: "allExtensionNumbersResponse", value: create(reflectionV1.ExtensionNumberResponseSchema, { baseTypeName: r.value }) }
          : error(Code.NotFound, `type ${r.value} not found`);
        break;
      default:
        messageResponse = error(Code.NotFound, "extensions are not used by Trellis");
    }
    return create(reflectionV1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse });
  };
}
