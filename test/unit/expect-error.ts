// Helpers for asserting TrellisErrors in unit tests (not a test file itself: the unit project runs *.test.ts).
import { expect } from "vitest";
import { type Reason, TrellisError } from "../../proto/core/errors.js";

/** Runs `fn`, which must throw a TrellisError; returns it for further checks. */
export function trellisErrorOf(fn: () => unknown): TrellisError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) throw new Error("expected a TrellisError, nothing was thrown");
  expect(thrown).toBeInstanceOf(TrellisError);
  return thrown as TrellisError;
}

/** Awaits `promise`, which must reject with a TrellisError of `reason`; returns the error. */
export async function rejectsWith(promise: Promise<unknown>, reason: Reason): Promise<TrellisError> {
  let thrown: unknown;
  await promise.then(
    () => undefined,
    (err: unknown) => {
      thrown = err ?? new Error("rejected with undefined");
    },
  );
  if (thrown === undefined) throw new Error(`expected a rejection with ${reason}, the promise resolved`);
  expect(thrown).toBeInstanceOf(TrellisError);
  expect((thrown as TrellisError).reason).toBe(reason);
  return thrown as TrellisError;
}
