// How every Etcd* store calls etcd and reads its values back (DESIGN.md §6: every etcd value read back is
// validated): failures become UNAVAILABLE naming what was being done; a value that is not the record it
// should be is DATA_LOSS naming its key.
import { type DescMessage, fromJsonString, type MessageShape } from "@bufbuild/protobuf";
import type { IKeyValue } from "etcd3";
import { TrellisError } from "../../proto/core/errors.js";
import { type EtcdConnection, explainEtcdFailure } from "./etcd-client.js";

export async function etcdCall<T>(what: string, fn: () => Promise<T>, connection?: EtcdConnection): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof TrellisError) throw err;
    throw new TrellisError("UNAVAILABLE", `etcd: could not ${what}: ${explainEtcdFailure(err, connection)}`, { cause: err });
  }
}

export function decodeRecord<Desc extends DescMessage>(schema: Desc, kv: IKeyValue): MessageShape<Desc> {
  try {
    return fromJsonString(schema, kv.value.toString());
  } catch (err) {
    throw new TrellisError("DATA_LOSS", `etcd key ${kv.key.toString()} does not hold a ${schema.typeName}`, { cause: err });
  }
}
