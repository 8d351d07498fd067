// Join tokens (DESIGN.md §6; notes/identity-anchors.md §1): "<id>.<secret>", 6 and 16 characters of
// [a-z0-9] as kubeadm's bootstrap tokens (about 82 bits of secret). The id names the stored record; only
// the secret's SHA-256 is stored, and it is compared in constant time.
import { createHash, timingSafeEqual } from "node:crypto";
import { TrellisError } from "../../proto/core/errors.js";
import type { JoinTokenRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
const tokenPattern = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;

/** Lifetimes an admin may ask for, in seconds: the default and the bounds. */
export const joinTokenTtl = { defaultS: 3600, minS: 60, maxS: 86_400 } as const;

/** The lifetime a request's ttl_seconds asks for (0: the default); INVALID_ARGUMENT out of range. Pure. */
export function joinTokenLifetimeS(ttlSeconds: bigint, field = "ttl_seconds"): number {
  const { minS, maxS, defaultS } = joinTokenTtl;
  if (ttlSeconds === 0n) return defaultS;
  if (ttlSeconds < BigInt(minS) || ttlSeconds > BigInt(maxS)) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      `${field} ${ttlSeconds} is not between ${minS} and ${maxS}; 0 means the default (${defaultS})`,
    );
  }
  return Number(ttlSeconds);
}

/** `length` characters of the alphabet, uniformly (rejection sampling over random bytes). */
function randomText(length: number, randomBytes: (n: number) => Uint8Array): string {
  let out = "";
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < 252 && out.length < length) out += alphabet[b % 36];
    }
  }
  return out;
}

export function newJoinToken(randomBytes: (n: number) => Uint8Array): { id: string; secret: string; text: string } {
  const id = randomText(6, randomBytes);
  const secret = randomText(16, randomBytes);
  return { id, secret, text: `${id}.${secret}` };
}

export function parseJoinToken(text: string): { id: string; secret: string } {
  const m = tokenPattern.exec(text.trim());
  if (!m?.[1] || !m[2]) {
    throw new TrellisError(
      "INVALID_ARGUMENT",
      "the join token is not of the form abcdef.0123456789abcdef (6 and 16 lowercase letters or digits); copy it as CreateJoinToken printed it",
    );
  }
  return { id: m[1], secret: m[2] };
}

export function hashSecret(secret: string): Uint8Array {
  return createHash("sha256").update(secret).digest();
}

/**
 * Whether `secret` opens `record` for `nodeName` at `nowMs`. An unknown id, a used token and a wrong
 * secret get one answer, so that a guesser learns nothing; a caller who holds the secret is told more.
 */
export function checkJoinToken(
  id: string,
  record: JoinTokenRecord | undefined,
  secret: string,
  nodeName: string,
  nowMs: number,
): JoinTokenRecord {
  const unknown = new TrellisError(
    "UNAUTHENTICATED",
    `join token ${id} is not valid (unknown, used already, or a wrong secret): ask an admin for a new one (AdminService.CreateJoinToken)`,
  );
  if (!record) throw unknown;
  const want = Buffer.from(record.secretSha256);
  const got = Buffer.from(hashSecret(secret));
  if (want.length !== got.length || !timingSafeEqual(want, got)) throw unknown;
  if (record.expiresAtMs <= BigInt(nowMs)) {
    throw new TrellisError(
      "UNAUTHENTICATED",
      `join token ${id} expired at ${new Date(Number(record.expiresAtMs)).toISOString()}: ask an admin for a new one`,
    );
  }
  if (record.nodeName !== nodeName) {
    throw new TrellisError(
      "PERMISSION_DENIED",
      `join token ${id} was created for node ${JSON.stringify(record.nodeName)}, not ${JSON.stringify(nodeName)}: start the daemon with --node-name ${record.nodeName}, or ask for a token for ${nodeName}`,
    );
  }
  return record;
}
