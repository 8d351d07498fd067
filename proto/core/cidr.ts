import { Address4 } from "ip-address";
import { TrellisError } from "./errors.js";

const maxIpv4 = (1n << 32n) - 1n;

/** Parses a dotted IPv4 address to its numeric value; throws INVALID_ARGUMENT naming `what`. */
export function parseIpv4(text: string, what = "address"): bigint {
  if (text.includes("/") || !Address4.isValid(text)) {
    throw new TrellisError("INVALID_ARGUMENT", `${what} ${JSON.stringify(text)} is not an IPv4 address`);
  }
  return new Address4(text).bigInt();
}

export function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 255n)).join(".");
}

const parsed = new Map<string, Cidr>();

/** An IPv4 network in canonical form (no host bits set). Immutable. */
export class Cidr {
  private constructor(
    readonly network: bigint,
    readonly prefixLength: number,
  ) {}

  /** Parses "10.244.0.0/16"; host bits must be zero so that every Cidr has one canonical text. */
  static parse(text: string, what = "CIDR"): Cidr {
    // Each read of a replica's subnet view parses every leased subnet: remember the valid ones (Cidr is immutable).
    const known = parsed.get(text);
    if (known) return known;
    const cidr = Cidr.parseUncached(text, what);
    if (parsed.size >= 65_536) parsed.clear();
    parsed.set(text, cidr);
    return cidr;
  }

  private static parseUncached(text: string, what: string): Cidr {
    const slash = text.indexOf("/");
    const prefixText = slash < 0 ? "" : text.slice(slash + 1);
    const host = slash < 0 ? "" : text.slice(0, slash);
    if (slash < 0 || !/^\d{1,2}$/.test(prefixText) || Number(prefixText) > 32 || !Address4.isValid(host)) {
      throw new TrellisError("INVALID_ARGUMENT", `${what} ${JSON.stringify(text)} is not an IPv4 CIDR like 10.244.0.0/16`);
    }
    const network = parseIpv4(host, what);
    const cidr = Cidr.of(network, Number(prefixText));
    if (cidr.network !== network) {
      throw new TrellisError("INVALID_ARGUMENT", `${what} ${JSON.stringify(text)} has host bits set; did you mean ${cidr.toString()}?`);
    }
    return cidr;
  }

  /** The network of prefix length `prefixLength` that contains `address`. */
  static of(address: bigint, prefixLength: number): Cidr {
    const mask = (maxIpv4 << BigInt(32 - prefixLength)) & maxIpv4;
    return new Cidr(address & mask, prefixLength);
  }

  /** Number of addresses, network and broadcast included. */
  get size(): bigint {
    return 1n << BigInt(32 - this.prefixLength);
  }

  get last(): bigint {
    return this.network + this.size - 1n;
  }

  contains(address: bigint): boolean {
    return address >= this.network && address <= this.last;
  }

  covers(other: Cidr): boolean {
    return other.prefixLength >= this.prefixLength && this.contains(other.network);
  }

  overlaps(other: Cidr): boolean {
    return this.covers(other) || other.covers(this);
  }

  /** The `index`-th address, counting the network address as 0. */
  address(index: bigint): bigint {
    if (index < 0n || index >= this.size) throw new RangeError(`index ${index} outside ${this.toString()}`);
    return this.network + index;
  }

  /** How many subnets of `prefixLength` this network splits into (0 when they are larger than it). */
  subnetCount(prefixLength: number): bigint {
    return prefixLength < this.prefixLength ? 0n : 1n << BigInt(prefixLength - this.prefixLength);
  }

  /** The `index`-th subnet of `prefixLength`. */
  subnet(prefixLength: number, index: bigint): Cidr {
    if (index < 0n || index >= this.subnetCount(prefixLength)) {
      throw new RangeError(`subnet ${index} of /${prefixLength} outside ${this.toString()}`);
    }
    return new Cidr(this.network + index * (1n << BigInt(32 - prefixLength)), prefixLength);
  }

  equals(other: Cidr): boolean {
    return this.network === other.network && this.prefixLength === other.prefixLength;
  }

  toString(): string {
    return `${formatIpv4(this.network)}/${this.prefixLength}`;
  }
}
