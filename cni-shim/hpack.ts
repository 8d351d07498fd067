// HPACK (RFC 7541) for one gRPC call, pure. The tables come from hpack.js (its static table and Huffman
// code, plain data modules); the npm HPACK libraries' own coders cost 20-40 ms of CPU to load
// (notes/pod-path-cost.md), so the few lines that walk them are here.
//
// The shim announces SETTINGS_HEADER_TABLE_SIZE=0, so the server may not keep a dynamic table for us: a
// reference to one is refused, and entries it "adds" are evicted at once (RFC 7541 §4.4).
import { encode as huffmanCodes } from "hpack.js/lib/hpack/huffman.js";
import { table as staticTable } from "hpack.js/lib/hpack/static-table.js";

export type Header = readonly [name: string, value: string];

export class HpackError extends Error {
  override readonly name = "HpackError";
}

/** The Huffman code as a binary tree: node i has children tree[2i] (bit 0) and tree[2i+1] (bit 1); leaves are -(symbol+1). */
function huffmanTree(): Int32Array {
  const tree = new Int32Array(2 * 2 * huffmanCodes.length);
  let nodes = 1;
  huffmanCodes.forEach(([bits, code], symbol) => {
    let node = 0;
    for (let i = bits - 1; i >= 0; i--) {
      const slot = 2 * node + ((code >>> i) & 1);
      if (i === 0) tree[slot] = -(symbol + 1);
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot] ?? 0;
      }
    }
  });
  return tree;
}

let tree: Int32Array | undefined;

/** Decodes a Huffman-coded string (RFC 7541 §5.2): padding is at most 7 one-bits; EOS is an error. */
export function huffmanDecode(bytes: Uint8Array): Uint8Array {
  tree ??= huffmanTree();
  const out: number[] = [];
  let node = 0;
  let depth = 0; // bits since the last symbol
  let allOnes = true;
  for (const byte of bytes) {
    for (let i = 7; i >= 0; i--) {
      const bit = (byte >>> i) & 1;
      const next = tree[2 * node + bit] ?? 0;
      depth++;
      allOnes &&= bit === 1;
      if (next < 0) {
        if (next === -257) throw new HpackError("Huffman string holds EOS");
        out.push(-next - 1);
        node = 0;
        depth = 0;
        allOnes = true;
      } else if (next === 0) throw new HpackError("invalid Huffman code");
      else node = next;
    }
  }
  if (depth > 7 || !allOnes) throw new HpackError("Huffman string has invalid padding");
  return Uint8Array.from(out);
}

/** Reads HPACK structures from one header block. */
class Cursor {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  byte(): number {
    const v = this.b[this.pos++];
    if (v === undefined) throw new HpackError("header block ends inside a field");
    return v;
  }
  /** An integer with an N-bit prefix (RFC 7541 §5.1); the prefix byte is the next byte. */
  int(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.byte() & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (shift > 21) throw new HpackError("integer too large");
      const b = this.byte();
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
  }
  string(): string {
    const huffman = ((this.b[this.pos] ?? 0) & 0x80) !== 0;
    const length = this.int(7);
    if (this.pos + length > this.b.length) throw new HpackError("header block ends inside a string");
    const raw = this.b.subarray(this.pos, this.pos + length);
    this.pos += length;
    return new TextDecoder().decode(huffman ? huffmanDecode(raw) : raw);
  }
}

function staticEntry(index: number): { name: string; value: string } {
  const entry = staticTable[index - 1];
  if (index < 1 || !entry) throw new HpackError(`header index ${index} is not in the static table (the shim keeps no dynamic table)`);
  return entry;
}

/** Decodes one complete header block into its fields, in order. */
export function decodeHeaderBlock(block: Uint8Array): Header[] {
  const c = new Cursor(block);
  const headers: Header[] = [];
  while (!c.done) {
    const first = block[c.pos] ?? 0;
    if (first & 0x80) {
      const { name, value } = staticEntry(c.int(7)); // indexed field (§6.1)
      headers.push([name, value]);
    } else if ((first & 0xe0) === 0x20) {
      const size = c.int(5); // dynamic table size update (§6.3)
      if (size !== 0) throw new HpackError(`dynamic table size update to ${size}; the shim allows 0`);
    } else {
      const prefix = first & 0x40 ? 6 : 4; // with incremental indexing (§6.2.1), without or never (§6.2.2-3)
      const index = c.int(prefix);
      const name = index === 0 ? c.string() : staticEntry(index).name;
      headers.push([name, c.string()]);
    }
  }
  return headers;
}

function pushInt(out: number[], value: number, prefixBits: number, firstBits: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(firstBits | value);
    return;
  }
  out.push(firstBits | max);
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

function pushString(out: number[], text: string): void {
  const bytes = new TextEncoder().encode(text);
  pushInt(out, bytes.length, 7, 0); // H=0: no Huffman
  for (const b of bytes) out.push(b);
}

/** Encodes fields as literals without indexing and without Huffman (§6.2.2): valid for any decoder. */
export function encodeHeaderBlock(headers: readonly Header[]): Uint8Array {
  const out: number[] = [];
  for (const [name, value] of headers) {
    out.push(0);
    pushString(out, name);
    pushString(out, value);
  }
  return Uint8Array.from(out);
}
