// Types for the two plain data modules of hpack.js that cni-shim/hpack.ts reads (the package ships none).
declare module "hpack.js/lib/hpack/huffman.js" {
  /** For each symbol 0..256 (256 = EOS): [code length in bits, code]. RFC 7541 Appendix B. */
  export const encode: ReadonlyArray<readonly [number, number]>;
}
declare module "hpack.js/lib/hpack/static-table.js" {
  /** The 61 entries of RFC 7541 Appendix A, index 1 first. */
  export const table: ReadonlyArray<{ readonly name: string; readonly value: string }>;
}
