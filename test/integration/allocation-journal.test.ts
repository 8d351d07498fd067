import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FileAllocationJournal } from "../../node-daemon/ipam/allocation-journal.js";
import { describeAllocationJournalContract } from "../contract/allocation-journal.js";

const dirs: string[] = [];
const stateDir = async () => {
  const dir = await mkdtemp(join(tmpdir(), "trellis-journal-"));
  dirs.push(dir);
  return dir;
};
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describeAllocationJournalContract("FileAllocationJournal (real files, fsync)", async () => {
  const dir = await stateDir();
  return { journal: new FileAllocationJournal(dir), reopen: async () => new FileAllocationJournal(dir) };
});

describe("FileAllocationJournal on disk", () => {
  it("removes a reservation a crash left half-written (a .tmp file) and keeps only finished ones", async () => {
    const dir = await stateDir();
    const journal = new FileAllocationJournal(dir);
    await journal.load();
    await writeFile(join(dir, "allocations", "10.244.1.5.123.abc.tmp"), "{");
    expect(await new FileAllocationJournal(dir).load()).toEqual([]);
    expect(await readdir(join(dir, "allocations"))).toEqual([]);
  });

  it("an unreadable record stops the load with DATA_LOSS naming the file", async () => {
    const dir = await stateDir();
    await new FileAllocationJournal(dir).load();
    await writeFile(join(dir, "allocations", "10.244.1.6"), "not json");
    await expect(new FileAllocationJournal(dir).load()).rejects.toThrow(/allocation file .*10\.244\.1\.6 is unreadable/);
  });
});
