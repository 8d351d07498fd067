/** The CNI spec's rules for the names a runtime passes (DESIGN.md §4), shared by the shim and the daemon. Pure. */

/** CNI_CONTAINERID: starts with a letter or digit, then letters, digits, '_', '.' and '-'. */
export const containerIdPattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Linux interface names: at most 15 bytes, no '/', ':' or whitespace, not "." or "..". */
export function invalidIfNameReason(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (Buffer.byteLength(name) > 15) return `is ${Buffer.byteLength(name)} bytes long; Linux allows at most 15 bytes`;
  if (name === "." || name === "..") return "may not be . or ..";
  if (/[/:\s]/.test(name)) return "may not contain '/', ':' or whitespace";
  return undefined;
}
