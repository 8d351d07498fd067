import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** Polls `check` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ""}`);
    await sleep(everyMs);
  }
}

/**
 * Waits until a JSON log file has a line whose msg is `msg`; returns that line. On timeout the error carries
 * the log's last lines, so a CI failure says what the process was doing instead (its file is gone by then).
 */
export async function waitForLog(file: string, msg: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const read = () => readFile(file, "utf8").catch(() => "");
  try {
    return await waitFor(
      `"${msg}" in ${file}`,
      async () => {
        for (const line of (await read()).split("\n")) {
          if (!line.startsWith("{")) continue;
          const obj = JSON.parse(line) as Record<string, unknown>;
          if (obj.msg === msg) return obj;
        }
        return undefined;
      },
      timeoutMs,
      50,
    );
  } catch (err) {
    const tail = (await read()).trimEnd().split("\n").slice(-20).join("\n");
    throw new Error(`${(err as Error).message}; the log ends with:\n${tail || "(nothing)"}`);
  }
}
