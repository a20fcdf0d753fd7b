// `node bench/core-memory.ts`: what a tenant could pile up in core etcd's memory if nothing bounded
// it, measured on a fresh single-member core etcd each, called directly (the gateway's bounds in
// gateway/tenant/limits.ts come from these figures): empty Watch streams, watches, leases, and unpaged
// Ranges built at once. Prints etcd's resident memory before and after each.
import http2, { type ClientHttp2Session } from "node:http2";
import { readFileSync } from "node:fs";
import { frame, frameWriter } from "../gateway/wire/grpc.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "../test/e2e/harness.ts";

const MiB = 1024 * 1024;
// etcd 3.5, the line the figures in gateway/tenant/limits.ts and the README were measured on (3.5.16).
const LINE = "3.5";

function memoryMiB(core: CoreEtcd, field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${core.pid()}/status`, "utf8");
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]) / 1024;
}

async function connect(core: CoreEtcd): Promise<ClientHttp2Session> {
  const session = http2.connect(core.endpoint, { ca: readFileSync(core.caFile), cert: readFileSync(core.certFile), key: readFileSync(core.keyFile), settings: { initialWindowSize: 16 * MiB } });
  session.on("error", () => {});
  await new Promise((resolve) => session.once("connect", resolve));
  session.setLocalWindowSize(64 * MiB);
  return session;
}

const open = (session: ClientHttp2Session, path: string) => {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
  stream.on("error", () => {});
  return stream;
};

/** One unary call; resolves with the bytes of its answer. */
function call(session: ClientHttp2Session, path: string, body: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const stream = open(session, path);
    let bytes = 0;
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
    stream.on("close", () => resolve(bytes));
    stream.end(body);
  });
}

const message = (write: (writer: ReturnType<typeof frameWriter>) => void, size = 64) => {
  const writer = frameWriter(size);
  write(writer);
  return frame(writer);
};
const settle = () => new Promise((resolve) => setTimeout(resolve, 2_000));

async function measure(name: string, run: (core: CoreEtcd, session: ClientHttp2Session) => Promise<void>, extraFlags: string[] = []): Promise<void> {
  const core = await startCoreEtcd(await tempDir("core-memory-"), { extraFlags, line: LINE });
  const session = await connect(core);
  const before = memoryMiB(core, "VmRSS");
  await run(core, session);
  console.log(`${name}: core etcd ${core.release.version}'s memory ${before.toFixed(0)} MiB → ${memoryMiB(core, "VmRSS").toFixed(0)} MiB (peak ${memoryMiB(core, "VmHWM").toFixed(0)} MiB)`);
  session.destroy();
  await stopAll();
}

await measure("10,000 empty Watch streams", async (_core, session) => {
  for (let i = 0; i < 10_000; i++) {
    open(session, "/etcdserverpb.Watch/Watch");
    if (i % 500 === 499) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await settle();
});

await measure("100,000 watches on 10 streams", async (_core, session) => {
  const streams = Array.from({ length: 10 }, () => open(session, "/etcdserverpb.Watch/Watch"));
  for (let i = 0; i < 100_000; i++) {
    const create = message((w) => {
      const mark = w.begin(1, 32);
      w.bytesField(1, Buffer.from(`/t/w/${i}`));
      w.finish(mark);
    });
    streams[i % streams.length]!.write(create);
    if (i % 2_000 === 1_999) await new Promise((resolve) => setImmediate(resolve));
  }
  await settle();
});

await measure("100,000 leases of 3600 s", async (_core, session) => {
  const grant = message((w) => w.varintField(1, 3600));
  for (let i = 0; i < 100_000; i += 100) await Promise.all(Array.from({ length: 100 }, () => call(session, "/etcdserverpb.Lease/LeaseGrant", grant)));
});

await measure(
  "32 unpaged Ranges at once over 64 MiB (1,024 values of 64 KiB)",
  async (_core, session) => {
    const value = Buffer.alloc(64 * 1024, "v");
    for (let i = 0; i < 1_024; i += 32) {
      await Promise.all(
        Array.from({ length: 32 }, (_, k) =>
          call(session, "/etcdserverpb.KV/Put", message((w) => (w.bytesField(1, Buffer.from(`/t/k${String(i + k).padStart(5, "0")}`)), w.bytesField(2, value)), 70_000)),
        ),
      );
    }
    const range = message((w) => (w.bytesField(1, Buffer.from("/t/")), w.bytesField(2, Buffer.from("/t0"))));
    await Promise.all(Array.from({ length: 32 }, () => call(session, "/etcdserverpb.KV/Range", range)));
  },
  [`--quota-backend-bytes=${4096 * MiB}`],
);
process.exit(0);
