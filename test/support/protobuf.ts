// Hand-written etcd requests for tests and the benchmark, with the gateway's own wire writer.
import { frame, frameWriter } from "../../gateway/wire/grpc.ts";
import type { Writer } from "../../gateway/wire/protobuf.ts";

/** One message, framed for gRPC, its fields written by `write`. */
export function framedMessage(write: (writer: Writer) => void): Buffer {
  const writer = frameWriter(1200);
  write(writer);
  return frame(writer);
}

/** A nested message as field `field`, its fields written by `write`. */
export function nested(writer: Writer, field: number, write: (writer: Writer) => void): void {
  const mark = writer.begin(field, 1100);
  write(writer);
  writer.finish(mark);
}
