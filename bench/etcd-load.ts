// The load generator of the data-path benchmark, in a process of its own: 32 concurrent calls of
// one kind on one HTTP/2 connection (as an API server's etcd client multiplexes), messages encoded
// once up front so that the generator costs as little CPU as it can. Prints one JSON line.
//   node bench/etcd-load.ts '{"endpoint":…,"ca":…,"cert":…,"key":…,"kind":"create|get|list","keyBase":…,"seconds":5,"worker":"w1"}'
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { framedMessage as encode, nested } from "../test/support/protobuf.ts";

interface Options {
  endpoint: string;
  ca: string;
  cert: string;
  key: string;
  /** seed: write `existing` objects once (names get and list read); the others: run `seconds`. */
  kind: "seed" | "create" | "get" | "list";
  /** Keys are keyBase + "/registry/widgets/default/" + name. */
  keyBase: string;
  seconds: number;
  /** Distinguishes the keys of one create run from another's. */
  worker: string;
  /** How many keys the create runs wrote before (get and list pick among them). */
  existing: number;
}

const CONCURRENCY = 32;
const VALUE = Buffer.alloc(1024, "v");
const options = JSON.parse(process.argv[2]!) as Options;
const widgets = Buffer.from(`${options.keyBase}/registry/widgets/default/`);
const widgetsEnd = Buffer.from(widgets);
widgetsEnd[widgetsEnd.length - 1]! += 1;

const keyOf = (name: string) => Buffer.concat([widgets, Buffer.from(name)]);
// Names sort as they were written, so a page start is a name.
const existingName = (i: number) => `w-${String(i).padStart(8, "0")}`;

/** kube-apiserver's create: if mod_revision(key) == 0 then put, else get. */
function createRequest(name: string): Buffer {
  const key = keyOf(name);
  return encode((w) => {
    nested(w, 1, (c) => {
      c.varintField(1, 0); // EQUAL
      c.varintField(2, 2); // MOD
      c.bytesField(3, key);
      c.varintField(6, 0);
    });
    nested(w, 2, (op) => nested(op, 2, (put) => {
      put.bytesField(1, key);
      put.bytesField(2, VALUE);
    }));
    nested(w, 3, (op) => nested(op, 1, (range) => range.bytesField(1, key)));
  });
}

function getRequest(): Buffer {
  return encode((w) => w.bytesField(1, keyOf(existingName(Math.floor(Math.random() * options.existing)))));
}

/** One page of 100, from a random object on, as a paged LIST does. */
function listRequest(): Buffer {
  return encode((w) => {
    w.bytesField(1, keyOf(existingName(Math.floor(Math.random() * Math.max(1, options.existing - 100)))));
    w.bytesField(2, widgetsEnd);
    w.varintField(3, 100);
  });
}

const PATHS = { seed: "/etcdserverpb.KV/Txn", create: "/etcdserverpb.KV/Txn", get: "/etcdserverpb.KV/Range", list: "/etcdserverpb.KV/Range" } as const;
// Reads are drawn from a pool made in advance; creates need a fresh key each ("c-" names sort
// before the seeded "w-" ones, so pages of seeded objects stay the same).
const reads = options.kind === "get" || options.kind === "list";
const pool = reads ? Array.from({ length: 4096 }, () => (options.kind === "get" ? getRequest() : listRequest())) : [];
let created = 0;
const nextRequest = () => {
  if (options.kind === "seed") return created < options.existing ? createRequest(existingName(created++)) : undefined;
  if (options.kind === "create") return createRequest(`c-${options.worker}-${created++}`);
  return pool[Math.floor(Math.random() * pool.length)]!;
};

const session = http2.connect(options.endpoint, { ca: readFileSync(options.ca), cert: readFileSync(options.cert), key: readFileSync(options.key), settings: { initialWindowSize: 4 << 20 } });
await new Promise<void>((resolve, reject) => {
  session.once("connect", () => resolve());
  session.once("error", reject);
});
session.setLocalWindowSize(32 << 20);
session.on("error", (error) => {
  process.stderr.write(`connection to ${options.endpoint} failed: ${error.message}\n`);
  process.exit(1);
});

const latencies: number[] = [];
let failures = 0;
let firstFailure = "";
const call = (body: Buffer) =>
  new Promise<void>((resolve) => {
    const started = performance.now();
    const stream = session.request({ ":method": "POST", ":path": PATHS[options.kind], "content-type": "application/grpc", te: "trailers" });
    let status: string | undefined;
    let httpStatus: unknown;
    stream.on("response", (headers) => {
      httpStatus = headers[":status"];
      status ??= headers["grpc-status"] as string | undefined;
    });
    stream.on("trailers", (trailers) => (status = trailers["grpc-status"] as string));
    stream.on("data", () => {});
    stream.on("error", () => {});
    stream.on("close", () => {
      if (status === "0") latencies.push(performance.now() - started);
      else {
        failures++;
        firstFailure ||= status === undefined ? `HTTP ${String(httpStatus)} without a gRPC status` : `gRPC status ${status}`;
      }
      resolve();
    });
    stream.end(body);
  });

const deadline = performance.now() + options.seconds * 1000;
const started = performance.now();
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < deadline || options.kind === "seed") {
      const body = nextRequest();
      if (!body) return;
      await call(body);
    }
  }),
);
const elapsed = (performance.now() - started) / 1000;
session.close();
latencies.sort((a, b) => a - b);
const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] ?? NaN;
process.stdout.write(`${JSON.stringify({ ops: latencies.length / elapsed, p50: at(0.5), p99: at(0.99), calls: latencies.length, failures, firstFailure, created })}\n`);
