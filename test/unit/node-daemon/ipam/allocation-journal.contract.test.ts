import { describeAllocationJournalContract } from "../../../contract/allocation-journal.js";
import { MemoryAllocationJournal } from "../../../support/fakes.js";

describeAllocationJournalContract("MemoryAllocationJournal", async () => {
  const journal = new MemoryAllocationJournal();
  return { journal, reopen: async () => new MemoryAllocationJournal(await journal.load()) };
});
