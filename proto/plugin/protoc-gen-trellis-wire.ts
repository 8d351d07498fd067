// protoc plugin (run by buf generate, see proto/buf.gen.yaml): for each selected proto package, a
// descriptor-free codec: plain interfaces plus encode/decode functions over @bufbuild/protobuf/wire, and
// each service's method paths. The CNI shim uses it instead of the descriptor-based protoc-gen-es output,
// which costs it about 40 ms of CPU per exec to load (notes/pod-path-cost.md). The schema stays the
// .proto file: nothing here is written by hand per message, and test/unit/proto/wire.test.ts checks the
// output against protoc-gen-es's code on random messages.
//
// Supported: proto3 scalars, enums, messages, repeated fields. Anything else (maps, oneofs, proto3
// optional, groups) stops generation with an error naming the field, rather than generating wrong code.
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { createEcmaScriptPlugin, runNodeJs, type Schema } from "@bufbuild/protoplugin";

interface Options {
  readonly packages: readonly string[];
}

/** How one scalar type is read, written and typed. */
const scalars: Record<ScalarType, { ts: string; method: string; wire: "Varint" | "Bit32" | "Bit64" | "LengthDelimited"; zero: string }> = {
  [ScalarType.DOUBLE]: { ts: "number", method: "double", wire: "Bit64", zero: "0" },
  [ScalarType.FLOAT]: { ts: "number", method: "float", wire: "Bit32", zero: "0" },
  [ScalarType.INT64]: { ts: "bigint", method: "int64", wire: "Varint", zero: "0n" },
  [ScalarType.UINT64]: { ts: "bigint", method: "uint64", wire: "Varint", zero: "0n" },
  [ScalarType.INT32]: { ts: "number", method: "int32", wire: "Varint", zero: "0" },
  [ScalarType.FIXED64]: { ts: "bigint", method: "fixed64", wire: "Bit64", zero: "0n" },
  [ScalarType.FIXED32]: { ts: "number", method: "fixed32", wire: "Bit32", zero: "0" },
  [ScalarType.BOOL]: { ts: "boolean", method: "bool", wire: "Varint", zero: "false" },
  [ScalarType.STRING]: { ts: "string", method: "string", wire: "LengthDelimited", zero: '""' },
  [ScalarType.BYTES]: { ts: "Uint8Array", method: "bytes", wire: "LengthDelimited", zero: "new Uint8Array(0)" },
  [ScalarType.UINT32]: { ts: "number", method: "uint32", wire: "Varint", zero: "0" },
  [ScalarType.SFIXED32]: { ts: "number", method: "sfixed32", wire: "Bit32", zero: "0" },
  [ScalarType.SFIXED64]: { ts: "bigint", method: "sfixed64", wire: "Bit64", zero: "0n" },
  [ScalarType.SINT32]: { ts: "number", method: "sint32", wire: "Varint", zero: "0" },
  [ScalarType.SINT64]: { ts: "bigint", method: "sint64", wire: "Varint", zero: "0n" },
};

function unsupported(field: DescField, what: string): never {
  throw new Error(`protoc-gen-trellis-wire: ${field.parent.typeName}.${field.name} is ${what}, which this plugin does not generate`);
}

/** The scalar description of a field's element: enums are int32 on the wire. */
function elementScalar(field: DescField) {
  if (field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")) return scalars[field.scalar];
  if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) return scalars[ScalarType.INT32];
  return undefined;
}

function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  return undefined;
}

function check(field: DescField): void {
  if (field.fieldKind === "map") unsupported(field, "a map");
  const other = messageOf(field)?.file ?? field.enum?.file;
  if (other && other !== field.parent.file) unsupported(field, `of a type from ${other.name}.proto`);
  if (field.oneof) unsupported(field, "in a oneof");
  if (field.proto.proto3Optional) unsupported(field, "proto3 optional");
  const grouped =
    field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") ? field.delimitedEncoding : false;
  if (grouped) unsupported(field, "group-encoded");
}

function tsType(field: DescField): string {
  const msg = messageOf(field);
  const element = msg ? msg.name : field.enum ? field.enum.name : (elementScalar(field)?.ts ?? "never");
  if (field.fieldKind === "list") return `${element}[]`;
  return msg ? `${element} | undefined` : element;
}

function zero(field: DescField): string {
  if (field.fieldKind === "list") return "[]";
  if (field.fieldKind === "message") return "undefined";
  return elementScalar(field)?.zero ?? "undefined";
}

function generateTs(schema: Schema<Options>): void {
  for (const file of schema.files) {
    if (!schema.options.packages.includes(file.proto.package)) continue;
    const f = schema.generateFile(`${file.name}_wire.ts`);
    f.preamble(file);
    const reader = f.import("BinaryReader", "@bufbuild/protobuf/wire");
    const writer = f.import("BinaryWriter", "@bufbuild/protobuf/wire");
    const wireType = f.import("WireType", "@bufbuild/protobuf/wire");

    for (const en of file.enums) {
      f.print(f.jsDoc(en));
      f.print(f.export("const", en.name), " = {");
      for (const v of en.values) f.print(`  ${v.localName}: ${v.number},`);
      f.print("} as const;");
      f.print(f.export("type", en.name), ` = (typeof ${en.name})[keyof typeof ${en.name}];`);
      f.print();
    }

    for (const msg of file.messages) {
      if (msg.nestedMessages.length > 0 || msg.nestedEnums.length > 0) {
        throw new Error(`protoc-gen-trellis-wire: ${msg.typeName} has nested types, which this plugin does not generate`);
      }
      msg.fields.forEach(check);
      f.print(f.jsDoc(msg));
      f.print(f.export("interface", msg.name), " {");
      for (const field of msg.fields) f.print(`  ${field.localName}: ${tsType(field)};`);
      f.print("}");
      f.print();

      f.print(f.export("function", `encode${msg.name}`), `(m: ${msg.name}, w = new `, writer, `()): `, writer, " {");
      for (const field of msg.fields) {
        const name = `m.${field.localName}`;
        const sub = messageOf(field);
        const sc = elementScalar(field);
        if (field.fieldKind === "list" && sub) {
          f.print(`  for (const v of ${name}) encode${sub.name}(v, w.tag(${field.number}, `, wireType, `.LengthDelimited).fork()).join();`);
        } else if (field.fieldKind === "list" && sc && sc.wire !== "LengthDelimited") {
          f.print(`  if (${name}.length > 0) {`);
          f.print(`    w.tag(${field.number}, `, wireType, ".LengthDelimited).fork();");
          f.print(`    for (const v of ${name}) w.${sc.method}(v);`);
          f.print("    w.join();");
          f.print("  }");
        } else if (field.fieldKind === "list" && sc) {
          f.print(`  for (const v of ${name}) w.tag(${field.number}, `, wireType, `.LengthDelimited).${sc.method}(v);`);
        } else if (sub) {
          f.print(
            `  if (${name} !== undefined) encode${sub.name}(${name}, w.tag(${field.number}, `,
            wireType,
            `.LengthDelimited).fork()).join();`,
          );
        } else if (sc) {
          const present = sc.ts === "Uint8Array" ? `${name}.length > 0` : `${name} !== ${sc.zero}`;
          f.print(`  if (${present}) w.tag(${field.number}, `, wireType, `.${sc.wire}).${sc.method}(${name});`);
        }
      }
      f.print("  return w;");
      f.print("}");
      f.print();

      f.print(f.export("function", `decode${msg.name}`), "(input: Uint8Array | ", reader, `, length?: number): ${msg.name} {`);
      f.print("  const r = input instanceof ", reader, " ? input : new ", reader, "(input);");
      f.print("  const end = length === undefined ? r.len : r.pos + length;");
      f.print(`  const m: ${msg.name} = {`);
      for (const field of msg.fields) f.print(`    ${field.localName}: ${zero(field)},`);
      f.print("  };");
      f.print("  while (r.pos < end) {");
      f.print("    const [no, wt] = r.tag();");
      f.print("    switch (no) {");
      for (const field of msg.fields) {
        const name = `m.${field.localName}`;
        const sub = messageOf(field);
        const sc = elementScalar(field);
        f.print(`      case ${field.number}:`);
        if (sub) {
          f.print("        expectWire(wt, ", wireType, `.LengthDelimited, ${JSON.stringify(`${msg.typeName}.${field.name}`)});`);
          const value = `decode${sub.name}(r, r.uint32())`;
          f.print(field.fieldKind === "list" ? `        ${name}.push(${value});` : `        ${name} = ${value};`);
        } else if (sc && field.fieldKind === "list" && sc.wire !== "LengthDelimited") {
          f.print("        if (wt === ", wireType, ".LengthDelimited) {");
          f.print("          const stop = r.uint32() + r.pos;");
          f.print(`          while (r.pos < stop) ${name}.push(r.${sc.method}()${sc.ts === "bigint" ? " as bigint" : ""});`);
          f.print("        } else {");
          f.print("          expectWire(wt, ", wireType, `.${sc.wire}, ${JSON.stringify(`${msg.typeName}.${field.name}`)});`);
          f.print(`          ${name}.push(r.${sc.method}()${sc.ts === "bigint" ? " as bigint" : ""});`);
          f.print("        }");
        } else if (sc) {
          f.print("        expectWire(wt, ", wireType, `.${sc.wire}, ${JSON.stringify(`${msg.typeName}.${field.name}`)});`);
          const cast = field.enum ? ` as ${field.enum.name}` : sc.ts === "bigint" ? " as bigint" : "";
          f.print(
            field.fieldKind === "list" ? `        ${name}.push(r.${sc.method}()${cast});` : `        ${name} = r.${sc.method}()${cast};`,
          );
        }
        f.print("        break;");
      }
      f.print("      default:");
      f.print("        r.skip(wt, no);");
      f.print("    }");
      f.print("  }");
      f.print("  return m;");
      f.print("}");
      f.print();
    }

    for (const service of file.services) {
      f.print(f.jsDoc(service));
      f.print(f.export("const", service.name), " = {");
      for (const method of service.methods) {
        if (method.methodKind !== "unary") throw new Error(`protoc-gen-trellis-wire: ${service.typeName}.${method.name} is not unary`);
        f.print(`  ${method.localName}: {`);
        f.print(`    path: ${JSON.stringify(`/${service.typeName}/${method.name}`)},`);
        f.print(`    encode: encode${method.input.name},`);
        f.print(`    decode: decode${method.output.name},`);
        f.print("  },");
      }
      f.print("} as const;");
      f.print();
    }

    f.print("function expectWire(got: ", wireType, ", want: ", wireType, ", field: string): void {");
    f.print('  if (got !== want) throw new Error(field + ": wire type " + got + ", expected " + want);');
    f.print("}");
  }
}

const plugin = createEcmaScriptPlugin({
  name: "protoc-gen-trellis-wire",
  version: "v1",
  parseOptions(raw): Options {
    const packages: string[] = [];
    for (const { key, value } of raw) {
      if (key !== "package") throw new Error(`protoc-gen-trellis-wire: unknown option ${key}; use package=<proto package>`);
      packages.push(value);
    }
    return { packages };
  },
  generateTs,
});

runNodeJs(plugin);
