import { describeIdentityStoreContract } from "../../../contract/identity-store.js";
import { MemoryIdentityStore } from "../../../support/memory-identity-store.js";

describeIdentityStoreContract("in memory", async () => new MemoryIdentityStore());
