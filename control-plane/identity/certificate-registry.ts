// Which node certificates are valid now (DESIGN.md §6: evicting a node revokes its certificate): every
// replica follows the node-certificates allow-list in etcd into memory and checks each NodeService call
// against it. A serial it has not seen yet (issued a moment ago by another replica) is looked up in etcd
// before it is refused.
import type { NodeCertificatesRecord } from "../../proto/gen/trellis/store/v1/store_pb.js";
import type { IdentityStore } from "../store/identity-store.js";

export class CertificateRegistry {
  private current = new Map<string, NodeCertificatesRecord>();
  private readonly revokedListeners: Array<(node: string) => void> = [];

  constructor(
    private readonly store: IdentityStore,
    private readonly clock: () => number,
  ) {}

  /** Loads the allow-list and follows it until `signal` aborts. */
  async start(signal: AbortSignal): Promise<void> {
    await this.store.watchNodeCertificates(
      {
        onSnapshot: (all) => {
          const before = this.current;
          this.current = new Map(all);
          for (const node of before.keys()) if (!all.has(node)) this.notifyRevoked(node);
        },
        onChange: (node, record) => {
          if (record) this.current.set(node, record);
          else if (this.current.delete(node)) this.notifyRevoked(node);
        },
      },
      signal,
    );
  }

  /** Called with a node's name when its certificates are revoked (to close its open connections). */
  onRevoked(listener: (node: string) => void): void {
    this.revokedListeners.push(listener);
  }

  /** Whether `serial` (normalized) is one of `node`'s valid certificates. */
  async isValid(node: string, serial: string): Promise<boolean> {
    if (this.holds(this.current.get(node), serial)) return true;
    const stored = await this.store.findNodeCertificates(node);
    return this.holds(stored?.value, serial);
  }

  private holds(record: NodeCertificatesRecord | undefined, serial: string): boolean {
    const now = BigInt(this.clock());
    return record?.certificates.some((c) => c.serial === serial && c.notAfterMs > now) ?? false;
  }

  private notifyRevoked(node: string): void {
    for (const listener of this.revokedListeners) listener(node);
  }
}
