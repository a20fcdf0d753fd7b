// Issue 10 (bad input): whatever a tenant sends, the gateway answers with a gRPC status and keeps
// serving; nothing it refuses reaches core etcd, and what a tenant sends after a refusal is
// neither read nor held. Requests etcd itself refuses are refused with
// etcd's own words (checked against core etcd directly); the gateway's own limits
// (gateway/tenant/limits.ts) are named in their refusals. What the test client cannot express (several
// messages in a unary call, a compressed flag, a frame that never ends, plain HTTP/2) is sent as
// raw frames over node:http2 with the tenant's credentials. Then a seeded fuzz loop sends garbage
// and damaged messages to every served method (FUZZ_SEED=<n> and FUZZ_RUNS=<n> run another loop;
// FUZZ_REPORT=1 prints the statuses it saw).
import assert from "node:assert/strict";
import { once } from "node:events";
import { constants as http2constants, type ClientHttp2Session } from "node:http2";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { DEFAULT_LIMITS } from "../../gateway/tenant/limits.ts";
import { testConfig } from "../support/requests.ts";
import {
  connect,
  decodeResponse,
  encodeRequest,
  EtcdGrpcError,
  expectGrpcError,
  GrpcStatus,
  type EtcdClient,
  type KeyValue,
  type LeaseKeepAliveResponse,
  type RequestOp,
  type TxnRequest,
  type WatchResponse,
} from "../support/etcd-client.ts";
import { assertServing, grpcFrame, keysOutside, pb, rawCall, RawCall, rawSession, scrape, tenantClient, valueOf, within } from "./gateway-kit.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { startTenant, type RunningTenant } from "./tenant.ts";

const PREFIX = "/etcdstorage/t/";
const SEED = Number(process.env.FUZZ_SEED ?? 20261129);
const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 400);
const MiB = 1024 * 1024;
const put = (key: string, value = "v") => encodeRequest("/etcdserverpb.KV/Put", { key, value });

describe("bad input: refused with a status, and the gateway serves on", () => {
  let core: CoreEtcd;
  let tenant: RunningTenant;
  let host: EtcdClient;
  let client: EtcdClient;
  let session: ClientHttp2Session;
  let pid: number | undefined;
  let hostBefore: KeyValue[];

  before(async () => {
    const dir = await tempDir("bad-input-");
    core = await startCoreEtcd(dir);
    host = connect(core.endpoint, core.tls);
    // The host's keys, some right beside the prefix, where an off-by-one would land.
    for (const key of ["/registry/secrets/kube-system/host", "/etcdstorage/t", "/etcdstorage/t0", "/etcdstorage/s/x", "\0", "\xff"]) await host.kv.put({ key: Buffer.from(key, "latin1"), value: `host ${key}` });
    hostBefore = await keysOutside(host, PREFIX);
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    // Rates far above what the fuzz loop uses: this test is about input, not quotas.
    const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
    tenant = await startTenant(config, core, "t", { clientCertSecret: [{ name: "etcd-client", namespace: "t-system" }], quota }, path.join(dir, "t"));
    pid = tenant.proxy.gateway.process.pid;
    client = await tenantClient(tenant);
    session = await rawSession(tenant);
  });
  after(async () => {
    client?.close();
    host?.close();
    session?.close();
    await stopAll();
  });

  /** The stored value of a tenant key, read on core etcd (undefined: not there). */
  const stored = async (key: string) => (await host.kv.range({ key: `${PREFIX}${key}` })).kvs[0]?.value.toString();

  test("an empty operation in a Txn and an empty key are refused as core etcd refuses them", async () => {
    const cases: [string, (c: EtcdClient) => Promise<unknown>][] = [
      ["an empty RequestOp", (c) => c.kv.txn({ success: [{} as RequestOp] })],
      ["an empty RequestOp in a nested Txn", (c) => c.kv.txn({ success: [{ request_txn: { failure: [{} as RequestOp] } }] })],
      ["Put with an empty key", (c) => c.kv.put({ key: "", value: "v" })],
      ["Range without a key", (c) => c.kv.range({})],
      ["DeleteRange with an empty key", (c) => c.kv.deleteRange({ key: "" })],
      ["a Txn putting an empty key", (c) => c.kv.txn({ success: [{ request_put: { key: "", value: "v" } }] })],
      ["a Compare on an empty key", (c) => c.kv.txn({ compare: [{ key: "", target: "VERSION", result: "EQUAL", version: 0 }] })],
    ];
    for (const [what, call] of cases) {
      const etcd = await expectGrpcError(call(host), GrpcStatus.INVALID_ARGUMENT);
      const gateway = await expectGrpcError(call(client), GrpcStatus.INVALID_ARGUMENT);
      assert.equal(gateway.details, etcd.details, what);
    }
    const emptyOperation = await expectGrpcError(client.kv.txn({ success: [{} as RequestOp] }), GrpcStatus.INVALID_ARGUMENT);
    assert.equal(emptyOperation.details, "etcdserver: key not found");
  });

  test("a key over the gateway's limit is refused naming the limit; one at the limit is served", async () => {
    const { maxKeyBytes } = DEFAULT_LIMITS;
    const atLimit = `/k/${"a".repeat(maxKeyBytes - 3)}`;
    const over = `${atLimit}b`;
    await client.kv.put({ key: atLimit, value: "at the limit" });
    assert.equal(await stored(atLimit), "at the limit");
    const limit = new RegExp(`^etcdstorage gateway: a (key|range end|watched key) of ${maxKeyBytes + 1} bytes exceeds the limit of ${maxKeyBytes} bytes for a key$`);
    const refusals = [
      client.kv.put({ key: over, value: "v" }),
      client.kv.range({ key: "/k/", range_end: over }),
      client.kv.txn({ compare: [{ key: over, target: "VERSION", result: "EQUAL", version: 0 }], success: [{ request_put: { key: "/k/x", value: "v" } }] }),
    ];
    for (const refusal of refusals) assert.match((await expectGrpcError(refusal, GrpcStatus.INVALID_ARGUMENT)).details, limit);
    const watch = client.watch();
    watch.create({ key: over });
    const ended = await watch.closed;
    assert.equal(ended?.code, GrpcStatus.INVALID_ARGUMENT);
    assert.match(ended.details, limit);
    assert.equal(await stored("/k/x"), undefined, "the refused Txn wrote nothing");
  });

  test("a message over 2 MiB is refused with RESOURCE_EXHAUSTED as soon as its length is read, not once it is buffered", async () => {
    const { maxRequestBytes } = DEFAULT_LIMITS;
    assert.equal(maxRequestBytes, 2 * MiB);
    const tooLarge = `etcdstorage gateway: a request message of ${maxRequestBytes + 1} bytes exceeds the limit of ${maxRequestBytes} bytes`;
    // Only the frame's header and a little of its body are sent, and the request never ends: an answer proves nothing was waited for.
    for (const method of ["/etcdserverpb.KV/Put", "/etcdserverpb.Watch/Watch"]) {
      const call = new RawCall(session, method);
      call.write(grpcFrame(Buffer.alloc(64 * 1024), { declaredLength: maxRequestBytes + 1 }));
      const outcome = await within(5_000, `${method}: an answer to a message that was never finished`, call.outcome);
      assert.deepEqual([outcome.grpcStatus, outcome.grpcMessage], [GrpcStatus.RESOURCE_EXHAUSTED, tooLarge], method);
      // And the rest of it is not read: the stream is reset (see below).
      assert.equal(await within(5_000, `${method}: the reset after the answer`, call.closed), http2constants.NGHTTP2_NO_ERROR);
    }
    // Through the test client, a whole one.
    const whole = await expectGrpcError(client.kv.put({ key: "/big", value: Buffer.alloc(2 * MiB) }), GrpcStatus.RESOURCE_EXHAUSTED);
    assert.match(whole.details, /exceeds the limit of 2097152 bytes/);
    // Below the gateway's limit and above core etcd's (--max-request-bytes, 1.5 MiB): core etcd's own refusal.
    const etcds = await expectGrpcError(client.kv.put({ key: "/big", value: Buffer.alloc(1.9 * MiB) }), GrpcStatus.INVALID_ARGUMENT);
    assert.equal(etcds.details, "etcdserver: request is too large");
    assert.equal(await stored("/big"), undefined);
  });

  test("a refusal sent before any answer resets a tenant that is still sending (RST_STREAM NO_ERROR): nothing more arrives", async () => {
    const cases: [string, string, Buffer, number, RegExp][] = [
      ["a stream's malformed first message", "/etcdserverpb.Watch/Watch", grpcFrame(Buffer.from([0, 0])), GrpcStatus.INVALID_ARGUMENT, /malformed request: field number 0/],
      // Refused when the second message arrives, not when the call ends: a call that never ends would be held in memory message by message.
      ["a unary call's second message", "/etcdserverpb.KV/Put", Buffer.concat([grpcFrame(put("/first")), grpcFrame(put("/second"))]), GrpcStatus.INVALID_ARGUMENT, /exactly one message, got 2$/],
    ];
    for (const [what, method, bytes, code, reason] of cases) {
      const call = new RawCall(session, method);
      call.write(bytes); // and the request is never ended
      const outcome = await within(5_000, `${what}: the answer`, call.outcome);
      assert.equal(outcome.grpcStatus, code, what);
      assert.match(outcome.grpcMessage ?? "", reason, what);
      assert.equal(await within(5_000, `${what}: the reset after the answer`, call.closed), http2constants.NGHTTP2_NO_ERROR, what);
    }
    assert.deepEqual([await stored("/first"), await stored("/second")], [undefined, undefined]);
  });

  test("a stream ended after it answered drops what the tenant still sends: the gateway's memory does not grow with it", { timeout: 60_000 }, async () => {
    const watch = new RawCall(session, "/etcdserverpb.Watch/Watch");
    watch.write(grpcFrame(encodeRequest("/etcdserverpb.Watch/Watch", { create_request: { key: "/watched" } })));
    assert.ok(await within(5_000, "the watch to be created", watch.message(() => true)));
    watch.write(grpcFrame(Buffer.from([0, 0])));
    const outcome = await within(5_000, "the watch's status", watch.outcome);
    assert.deepEqual([outcome.grpcStatus, outcome.grpcMessage], [GrpcStatus.INVALID_ARGUMENT, "etcdstorage gateway: malformed request: field number 0"]);
    const rss = async () => valueOf(await scrape(tenant), "process_resident_memory_bytes");
    const before = await rss();
    // Well-formed watch requests, 512 MiB of them; once the last write is done, all but a flow-control window has reached the gateway.
    const message = grpcFrame(encodeRequest("/etcdserverpb.Watch/Watch", { create_request: { key: "/k", range_end: Buffer.alloc(MiB) } }));
    for (let sent = 0; sent < 512; sent++) {
      if (!watch.stream.write(message)) await within(10_000, "the gateway to read on", once(watch.stream, "drain"));
    }
    await new Promise<void>((resolve) => watch.stream.write(Buffer.alloc(0), () => resolve()));
    const grown = (await rss()) - before;
    assert.ok(grown < 256 * MiB, `the gateway grew by ${Math.round(grown / MiB)} MiB while the tenant sent 512 MiB to a stream already ended`);
    watch.cancel();
  });

  test("a Txn nested deeper than the gateway's limit is refused; one at the limit is served", async () => {
    const { maxTxnDepth } = DEFAULT_LIMITS;
    const nested = (levels: number): TxnRequest => (levels === 1 ? { success: [{ request_put: { key: "/deep", value: "bottom" } }] } : { success: [{ request_txn: nested(levels - 1) }] });
    const served = await client.kv.txn(nested(maxTxnDepth));
    let answer = served;
    for (let level = 1; level < maxTxnDepth; level++) answer = answer.responses[0]!.response_txn!;
    assert.equal(answer.responses[0]!.response, "response_put", `${maxTxnDepth} levels are served`);
    await client.kv.deleteRange({ key: "/deep" });
    const refused = await expectGrpcError(client.kv.txn(nested(maxTxnDepth + 1)), GrpcStatus.INVALID_ARGUMENT);
    assert.equal(refused.details, `etcdstorage gateway: transactions nested deeper than ${maxTxnDepth} levels are refused`);
    assert.equal(await stored("/deep"), undefined);
  });

  test("a LeaseGrant with a lease ID chosen by the client is refused", async () => {
    const refused = await expectGrpcError(client.lease.grant({ TTL: 60, ID: 12345 }), GrpcStatus.INVALID_ARGUMENT);
    assert.match(refused.details, /a lease ID cannot be chosen by the client/);
    assert.equal((await host.lease.timeToLive({ ID: 12345 })).TTL, "-1", "no lease 12345 in core etcd");
  });

  test("malformed protobuf is refused with INVALID_ARGUMENT on every method that reads its request", async () => {
    // Field 1 is the key (bytes) of a KV request and the ID or TTL (a varint) of a lease request.
    const damages: [string, (kv: boolean) => Buffer, RegExp][] = [
      ["a truncated varint", () => Buffer.concat([pb.tag(20, 0), Buffer.from([0x80, 0x80])]), /truncated varint/],
      ["field 1 with the wrong wire type", (kv) => (kv ? pb.varint(1, 7) : pb.bytes(1, "7")), /field 1 has wire type [02], expected [20]/],
      ["a length beyond the message", (kv) => pb.lyingBytes(kv ? 1 : 20, 100, Buffer.from("abc")), /length beyond the message/],
      ["field number 0", () => Buffer.from([0x02, 0x01, 0x61]), /field number 0/],
      ["a group (wire type 3)", () => pb.tag(9, 3), /wire type 3/],
    ];
    const methods = ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn", "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke", "/etcdserverpb.Lease/LeaseTimeToLive"];
    for (const method of methods) {
      for (const [what, bytes, reason] of damages) {
        // A Txn's field 1 is a Compare: its damage is tried below, inside one.
        if (method.endsWith("/Txn") && what.startsWith("field 1")) continue;
        const error = await expectGrpcError(client.unary(method, bytes(method.includes(".KV/"))), GrpcStatus.INVALID_ARGUMENT);
        assert.match(error.details, /^etcdstorage gateway: malformed request: /, `${method}, ${what}`);
        assert.match(error.details, reason, `${method}, ${what}`);
      }
    }
    // Deep inside: the Compare of a Txn nested in the success branch, its key with the wrong wire type.
    const deep = pb.bytes(2, pb.bytes(4, pb.bytes(1, pb.varint(3, 1))));
    assert.match((await expectGrpcError(client.unary("/etcdserverpb.KV/Txn", deep), GrpcStatus.INVALID_ARGUMENT)).details, /Compare field 3 has wire type 0, expected 2/);
    // LeaseKeepAlive and Watch end the stream.
    for (const method of ["/etcdserverpb.Lease/LeaseKeepAlive", "/etcdserverpb.Watch/Watch"]) {
      const outcome = await rawCall(session, method, grpcFrame(damages[0]![1](false)));
      assert.equal(outcome.grpcStatus, GrpcStatus.INVALID_ARGUMENT, method);
      assert.match(outcome.grpcMessage ?? "", /malformed request: truncated varint/, method);
    }
  });

  test("a frame with the compressed flag set is refused: the gateway accepts identity only", async () => {
    const outcome = await rawCall(session, "/etcdserverpb.KV/Put", grpcFrame(put("/compressed"), { compressed: true }));
    assert.equal(outcome.grpcStatus, GrpcStatus.UNIMPLEMENTED);
    assert.match(outcome.grpcMessage ?? "", /compressed messages are not supported/);
    assert.equal(await stored("/compressed"), undefined);
  });

  test("a unary call carries exactly one whole message: two, none, or a truncated one are refused and nothing is written", async () => {
    const cases: [string, Buffer, string][] = [
      ["two messages", Buffer.concat([grpcFrame(put("/one")), grpcFrame(put("/two"))]), "got 2"],
      ["no message", Buffer.alloc(0), "got 0"],
      ["a frame shorter than it says", grpcFrame(put("/one"), { declaredLength: put("/one").length + 10 }), "got 0 and a truncated one"],
      ["half a frame header", Buffer.from([0, 0, 0]), "got 0 and a truncated one"],
      ["a message and a truncated one", Buffer.concat([grpcFrame(put("/one")), grpcFrame(put("/two")).subarray(0, 8)]), "got 1 and a truncated one"],
    ];
    for (const [what, body, got] of cases) {
      const outcome = await rawCall(session, "/etcdserverpb.KV/Put", body);
      assert.deepEqual([outcome.grpcStatus, outcome.grpcMessage], [GrpcStatus.INVALID_ARGUMENT, `etcdstorage gateway: a unary call carries exactly one message, ${got}`], what);
    }
    assert.deepEqual([await stored("/one"), await stored("/two")], [undefined, undefined]);
  });

  test("HTTP/2 requests that are not gRPC are answered 415, and nothing is written", async () => {
    const body = grpcFrame(put("/not-grpc"));
    for (const headers of [{ ":method": "GET" }, { "content-type": "application/json" }, { "content-type": "text/plain" }, { ":method": "PUT" }]) {
      const outcome = await rawCall(session, "/etcdserverpb.KV/Put", headers[":method"] === "GET" ? Buffer.alloc(0) : body, headers);
      assert.equal(outcome.httpStatus, 415, JSON.stringify(headers));
      assert.equal(outcome.grpcStatus, undefined);
    }
    assert.equal(await stored("/not-grpc"), undefined);
  });

  test(`garbage and damaged messages on every served method (fast-check, seed ${SEED}, ${FUZZ_RUNS} cases): a status every time, never an internal error`, { timeout: 120_000 }, async () => {
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fuzzCase(), async ({ method, bytes }) => {
        const code = STREAMS.includes(method) ? await streamCase(session, method, bytes) : await unaryCase(client, method, bytes);
        const name = `${method.split("/")[2]} ${GrpcStatus[code]}`;
        codes.set(name, (codes.get(name) ?? 0) + 1);
        assert.ok(ACCEPTABLE.has(code), `${method}: ${GrpcStatus[code]} for ${bytes.toString("hex")}`);
      }),
      { seed: SEED, numRuns: FUZZ_RUNS },
    );
    // Both what is refused and what is served get exercised.
    const seen = [...codes.keys()].join(", ");
    if (process.env.FUZZ_REPORT) console.log(Object.fromEntries([...codes].sort()));
    assert.ok(seen.includes("INVALID_ARGUMENT") && seen.includes(" OK"), seen);
    assert.doesNotMatch(tenant.proxy.gateway.logs(), /call failed inside the gateway/);
  });

  test("after all of it: the same gateway process serves on, and nothing outside the prefix changed", async () => {
    await assertServing(tenant, pid, client);
    assert.deepEqual(await keysOutside(host, PREFIX), hostBefore);
  });
});

// ---- the fuzz loop ----

const UNARY = [
  "/etcdserverpb.KV/Range",
  "/etcdserverpb.KV/Put",
  "/etcdserverpb.KV/DeleteRange",
  "/etcdserverpb.KV/Txn",
  "/etcdserverpb.Lease/LeaseGrant",
  "/etcdserverpb.Lease/LeaseRevoke",
  "/etcdserverpb.Lease/LeaseTimeToLive",
  "/etcdserverpb.Maintenance/Status",
];
const STREAMS = ["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"];
// etcd's own refusals of odd but well-formed requests, the gateway's of malformed ones, and quotas.
// Never INTERNAL or UNKNOWN (a gateway bug, or a broken answer), UNAVAILABLE or CANCELLED (a crash).
const ACCEPTABLE = new Set<number>([GrpcStatus.OK, GrpcStatus.INVALID_ARGUMENT, GrpcStatus.NOT_FOUND, GrpcStatus.FAILED_PRECONDITION, GrpcStatus.OUT_OF_RANGE, GrpcStatus.RESOURCE_EXHAUSTED]);

const keys = fc.constantFrom("", "a", "a/b", "\0", "\xff", "/registry/pods/p");
const bytesOf = (text: string) => Buffer.from(text, "latin1");
const rangeEnd = fc.option(fc.constantFrom("", "\0", "b", "\xff"), { nil: undefined });

/** Random Txn shapes, nested at any depth (past the gateway's limit too), with empty operations among them. */
const { txn } = fc.letrec<{ txn: TxnRequest; op: RequestOp }>((tie) => ({
  txn: fc.record({
    compare: fc.array(
      fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))), target: fc.constantFrom("VERSION", "VALUE", "MOD", "CREATE", "LEASE") as fc.Arbitrary<"VERSION">, result: fc.constantFrom("EQUAL", "LESS") as fc.Arbitrary<"EQUAL">, version: fc.integer({ min: 0, max: 3 }) }),
      { maxLength: 2 },
    ),
    success: fc.array(tie("op"), { maxLength: 3 }),
    failure: fc.array(tie("op"), { maxLength: 2 }),
  }),
  op: fc.oneof(
    { depthSize: "small" },
    fc.record({ request_range: fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))) }) }),
    fc.record({ request_put: fc.record({ key: keys.map(bytesOf), value: fc.string({ maxLength: 8 }), lease: fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }) }) }),
    fc.record({ request_delete_range: fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))) }) }),
    fc.constant({} as RequestOp),
    fc.record({ request_txn: tie("txn") }),
  ) as fc.Arbitrary<RequestOp>,
}));
/** A chain of Txns `levels` deep, for depths the random shapes rarely reach. */
const chain = fc.integer({ min: 1, max: DEFAULT_LIMITS.maxTxnDepth + 4 }).map((levels) => {
  let request: TxnRequest = { success: [{ request_range: { key: "a" } }] };
  for (let i = 1; i < levels; i++) request = { failure: [{ request_txn: request }] };
  return request;
});

/** A well-formed request of `method` with random fields. */
function wellFormed(method: string): fc.Arbitrary<Buffer> {
  const encode = (request: object) => encodeRequest(method, request);
  const id = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
  switch (method) {
    case "/etcdserverpb.KV/Range":
      return fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))), limit: fc.integer({ min: 0, max: 5 }), revision: fc.integer({ min: -1, max: 1000 }), keys_only: fc.boolean() }).map(encode);
    case "/etcdserverpb.KV/Put":
      return fc.record({ key: keys.map(bytesOf), value: fc.string({ maxLength: 16 }), lease: id, prev_kv: fc.boolean(), ignore_value: fc.boolean(), ignore_lease: fc.boolean() }).map(encode);
    case "/etcdserverpb.KV/DeleteRange":
      return fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))), prev_kv: fc.boolean() }).map(encode);
    case "/etcdserverpb.KV/Txn":
      return fc.oneof(txn, chain).map(encode);
    case "/etcdserverpb.Lease/LeaseGrant":
      return fc.record({ TTL: fc.bigInt({ min: -10n, max: 1n << 40n }), ID: fc.constantFrom(0n, 1n, -1n) }).map(encode);
    case "/etcdserverpb.Lease/LeaseRevoke":
      return fc.record({ ID: id }).map(encode);
    case "/etcdserverpb.Lease/LeaseTimeToLive":
      return fc.record({ ID: id, keys: fc.boolean() }).map(encode);
    case "/etcdserverpb.Maintenance/Status":
      return fc.constant(encode({}));
    case "/etcdserverpb.Watch/Watch":
      return fc
        .oneof(
          fc.record({ create_request: fc.record({ key: keys.map(bytesOf), range_end: rangeEnd.map((e) => (e === undefined ? undefined : bytesOf(e))), start_revision: fc.integer({ min: 0, max: 1000 }), prev_kv: fc.boolean(), progress_notify: fc.boolean(), fragment: fc.boolean() }) }),
          fc.record({ cancel_request: fc.record({ watch_id: fc.integer({ min: -1, max: 3 }) }) }),
          fc.constant({ progress_request: {} }),
        )
        .map(encode);
    case "/etcdserverpb.Lease/LeaseKeepAlive":
      return fc.record({ ID: id }).map(encode);
    default:
      throw new Error(`no generator for ${method}`);
  }
}

/** A message damaged one way: cut short, a byte changed, or random bytes let in. */
function damaged(message: Buffer): fc.Arbitrary<Buffer> {
  const at = fc.integer({ min: 0, max: message.length });
  return fc.oneof(
    at.map((n) => message.subarray(0, n)),
    fc.tuple(at, fc.integer({ min: 0, max: 255 })).map(([n, byte]) => {
      const copy = Buffer.from(message);
      if (n < copy.length) copy[n] = byte;
      return copy;
    }),
    fc.tuple(at, fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([n, noise]) => Buffer.concat([message.subarray(0, n), Buffer.from(noise), message.subarray(n)])),
  );
}

function fuzzCase(): fc.Arbitrary<{ method: string; bytes: Buffer }> {
  return fc.constantFrom(...UNARY, ...STREAMS).chain((method) =>
    fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
      wellFormed(method),
      wellFormed(method).chain(damaged),
    ).map((bytes) => ({ method, bytes })),
  );
}

async function unaryCase(client: EtcdClient, method: string, bytes: Buffer): Promise<number> {
  try {
    await client.unary(method, bytes);
    return GrpcStatus.OK;
  } catch (error) {
    if (!(error instanceof EtcdGrpcError)) throw error;
    assert.notEqual(error.details, "", `${method}: a refusal says why`);
    return error.code;
  }
}

// A stream is open-ended: after the fuzzed message a known one follows, and its answer (or the
// stream's status, whichever comes first) ends the case. Answers come in order, so the fuzzed
// message has been dealt with by then.
const BARRIER_ID = 987654321;
const BARRIERS: Record<string, { request: Buffer; answered(message: Buffer): boolean }> = {
  "/etcdserverpb.Watch/Watch": {
    request: encodeRequest("/etcdserverpb.Watch/Watch", { create_request: { key: "/barrier", watch_id: BARRIER_ID } }),
    answered: (message) => decodeResponse<WatchResponse>("/etcdserverpb.Watch/Watch", message).watch_id === String(BARRIER_ID),
  },
  "/etcdserverpb.Lease/LeaseKeepAlive": {
    request: encodeRequest("/etcdserverpb.Lease/LeaseKeepAlive", { ID: BARRIER_ID }),
    answered: (message) => decodeResponse<LeaseKeepAliveResponse>("/etcdserverpb.Lease/LeaseKeepAlive", message).ID === String(BARRIER_ID),
  },
};

async function streamCase(session: ClientHttp2Session, method: string, bytes: Buffer): Promise<number> {
  const barrier = BARRIERS[method]!;
  const call = new RawCall(session, method);
  call.write(Buffer.concat([grpcFrame(bytes), grpcFrame(barrier.request)]));
  const reached = await within(10_000, `${method}: the barrier's answer or a status`, call.message(barrier.answered));
  if (reached) {
    call.cancel();
    return GrpcStatus.OK;
  }
  const outcome = await call.outcome;
  assert.notEqual(outcome.grpcStatus, undefined, `${method}: the stream ended without a status`);
  assert.notEqual(outcome.grpcMessage, "", `${method}: a refusal says why`);
  return outcome.grpcStatus!;
}
