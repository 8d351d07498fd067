import { encode as huffmanCodes } from "hpack.js/lib/hpack/huffman.js";
import { describe, expect, it } from "vitest";
import { decodeHeaderBlock, encodeHeaderBlock, HpackError, huffmanDecode } from "../../../cni-shim/hpack.js";

const hex = (text: string) => Uint8Array.from(Buffer.from(text.replace(/\s+/g, ""), "hex"));

/** A plain Huffman encoder (RFC 7541 §5.2) for tests: codes from the same table, padding with one-bits. */
function huffmanEncode(bytes: Uint8Array): Uint8Array {
  const out: number[] = [];
  let acc = 0n;
  let bits = 0n;
  for (const b of bytes) {
    const [len, code] = huffmanCodes[b] ?? [0, 0];
    acc = (acc << BigInt(len)) | BigInt(code);
    bits += BigInt(len);
    while (bits >= 8n) {
      bits -= 8n;
      out.push(Number((acc >> bits) & 0xffn));
    }
  }
  if (bits > 0n) out.push(Number(((acc << (8n - bits)) | ((1n << (8n - bits)) - 1n)) & 0xffn));
  return Uint8Array.from(out);
}

describe("HPACK decoding (RFC 7541 Appendix C)", () => {
  it.each([
    ["www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"],
    ["no-cache", "a8eb 1064 9cbf"],
    ["custom-key", "25a8 49e9 5ba9 7d7f"],
    ["custom-value", "25a8 49e9 5bb8 e8b4 bf"],
    ["Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"],
  ])("Huffman string %s", (text, coded) => {
    expect(new TextDecoder().decode(huffmanDecode(hex(coded)))).toBe(text);
  });

  it("C.4.1: a request with Huffman-coded literals", () => {
    expect(decodeHeaderBlock(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))).toEqual([
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "www.example.com"],
    ]);
  });

  it("C.6.1: a response with Huffman-coded literals", () => {
    const block = hex(`4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
      2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`);
    expect(decodeHeaderBlock(block)).toEqual([
      [":status", "302"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
      ["location", "https://www.example.com"],
    ]);
  });

  it("C.2.2/C.2.3: literals without indexing and never indexed", () => {
    expect(decodeHeaderBlock(hex("040c 2f73 616d 706c 652f 7061 7468"))).toEqual([[":path", "/sample/path"]]);
    expect(decodeHeaderBlock(hex("1008 7061 7373 776f 7264 0673 6563 7265 74"))).toEqual([["password", "secret"]]);
  });

  it("a table size update to 0 is accepted; any other size is not", () => {
    expect(decodeHeaderBlock(hex("20 88"))).toEqual([[":status", "200"]]);
    expect(() => decodeHeaderBlock(hex("3fe1 1f 88"))).toThrow(HpackError);
  });

  it.each([
    ["a dynamic table index", "be"],
    ["a truncated string", "0408 2f73"],
    ["a truncated integer", "7f"],
    ["EOS inside a Huffman string", "0085 ffff ffff ff"],
    ["padding that is not all ones", "0082 1f00"],
  ])("refuses %s", (_what, block) => {
    expect(() => decodeHeaderBlock(hex(block))).toThrow(HpackError);
  });

  it("decodes 2000 random Huffman strings back to their bytes", () => {
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 2000; i++) {
      const bytes = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256));
      expect(huffmanDecode(huffmanEncode(bytes))).toEqual(bytes);
    }
  });
});

describe("HPACK encoding", () => {
  it("round-trips through the decoder, with long and non-ASCII values", () => {
    const headers = [
      [":path", "/trellis.cni.v1.CniService/AddAttachment"],
      ["grpc-message", "x".repeat(300)],
      ["note", "ünïcødé ✓"],
    ] as const;
    expect(decodeHeaderBlock(encodeHeaderBlock(headers))).toEqual(headers);
  });
});
