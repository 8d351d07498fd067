// One message sent on many streams (a route change to every daemon) is encoded once, not once per stream:
// the serializer connect runs per stream then copies bytes. protobuf-es writes a message's unknown fields
// verbatim after its known ones (each as its tag, then its data), so a message whose known fields are all
// default and whose one unknown field is "the first tag of the encoding, then everything after it"
// serializes to exactly the bytes of the original.

import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";

/** `message`, encoded now, as a message whose serialization is a copy of those bytes. */
export function preEncoded<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): MessageShape<Desc> {
  const bytes = toBinary(schema, message);
  if (bytes.length === 0) return message;
  const reader = new BinaryReader(bytes);
  const [no, wireType] = reader.tag();
  const shell = create(schema);
  shell.$unknown = [{ no, wireType, data: bytes.subarray(reader.pos) }];
  return shell;
}

/**
 * `preEncoded`, once per message object: every stream that sends the same object sends the same bytes.
 * The cache holds messages weakly, so it lives as long as they do.
 */
export function encodeOnce<Desc extends DescMessage>(schema: Desc): (message: MessageShape<Desc>) => MessageShape<Desc> {
  const cache = new WeakMap<MessageShape<Desc>, MessageShape<Desc>>();
  return (message) => {
    let shell = cache.get(message);
    if (!shell) {
      shell = preEncoded(schema, message);
      cache.set(message, shell);
    }
    return shell;
  };
}
