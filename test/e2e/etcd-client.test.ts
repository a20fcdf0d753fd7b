// The tests' own etcd client against real TLS core etcd, once per line (3.6 and 3.5: harness.ts's
// ETCD_LINES): what later gateway tests take as the oracle. Each test names the etcd behaviour it
// relies on, measured here.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { gunzipSync, constants as zlibConstants } from "node:zlib";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";
import { connect, expectGrpcError, fileDescriptorProtos, GrpcStatus, type EtcdClient, type Event, type WatchResponse } from "../support/etcd-client.ts";
import { ETCD_LINES, startCoreEtcd, stopAll, tempDir, type CoreEtcd, type EtcdLine } from "./harness.ts";

for (const line of ETCD_LINES) {
  describe(`etcd ${line}`, () => {
    let core: CoreEtcd;
    let client: EtcdClient;

    before(async () => {
      core = await startCoreEtcd(await tempDir("etcd-client-"), { line });
      client = connect(core.endpoint, core.tls);
    });

    after(async () => {
      client.close();
      await stopAll();
    });

    const text = (bytes: Buffer | undefined): string | undefined => bytes?.toString("utf8");

    // -----------------------------------------------------------------------------------------
    // The vendored protos are etcd's
    // -----------------------------------------------------------------------------------------

    /** Every type, field, enum value and method of the given packages, one line each, sorted. */
    function shape(root: protobuf.Root, packages: readonly string[]): string[] {
      const lines: string[] = [];
      const visit = (namespace: protobuf.NamespaceBase): void => {
        for (const nested of namespace.nestedArray) {
          if (nested instanceof protobuf.Type) {
            for (const f of nested.fieldsArray) {
              f.resolve();
              lines.push(`${nested.fullName}.${f.name} = ${f.id} ${f.repeated ? "repeated " : ""}${f.resolvedType?.fullName ?? f.type}${f.partOf ? ` in oneof ${f.partOf.name}` : ""}`);
            }
          } else if (nested instanceof protobuf.Enum) {
            lines.push(`${nested.fullName} { ${Object.entries(nested.values).map(([k, v]) => `${k}=${v}`).join(" ")} }`);
          } else if (nested instanceof protobuf.Service) {
            for (const m of nested.methodsArray) {
              m.resolve();
              lines.push(`${nested.fullName}.${m.name}(${m.requestStream ? "stream " : ""}${m.resolvedRequestType!.fullName}) returns (${m.responseStream ? "stream " : ""}${m.resolvedResponseType!.fullName})`);
            }
          }
          if (nested instanceof protobuf.Namespace) visit(nested);
        }
      };
      for (const name of packages) visit(root.lookup(name) as protobuf.Namespace);
      return lines.sort();
    }

    const ETCD_PACKAGES = ["etcdserverpb", "mvccpb", "authpb"] as const;
    // What etcd 3.6 added to the API over the vendored protos (3.5's): fields of answers, which the
    // tests' client leaves undecoded (gateway-operations.test.ts reads dbSizeQuota by its number), and
    // a message of the Downgrade call; nothing that a request of the tests sends.
    const ADDED_SINCE_3_5: Record<EtcdLine, string[]> = {
      "3.5": [],
      "3.6": [
        ".etcdserverpb.DowngradeInfo.enabled = 1 bool",
        ".etcdserverpb.DowngradeInfo.targetVersion = 2 string",
        ".etcdserverpb.DowngradeVersionTestRequest.ver = 1 string",
        ".etcdserverpb.HashKVResponse.hash_revision = 4 int64",
        ".etcdserverpb.SnapshotResponse.version = 4 string",
        ".etcdserverpb.StatusResponse.dbSizeQuota = 12 int64",
        ".etcdserverpb.StatusResponse.downgradeInfo = 13 .etcdserverpb.DowngradeInfo",
        ".etcdserverpb.StatusResponse.storageVersion = 11 string",
      ],
    };

    /** protobufjs/ext/descriptor adds Root.fromDescriptor when imported; its typings do not declare it. */
    function rootOf(files: protobuf.Message[]): protobuf.Root {
      return (protobuf.Root as unknown as { fromDescriptor(set: { file: protobuf.Message[] }): protobuf.Root }).fromDescriptor({ file: files });
    }

    /**
     * The FileDescriptorProtos compiled into a Go etcd binary: gogo-generated code registers each
     * .proto file's descriptor gzipped, so each gzip stream in the binary is a candidate.
     */
    function descriptorsInBinary(binary: Buffer): protobuf.Message[] {
      const found = new Map<string, protobuf.Message>();
      const gzipMagic = Buffer.from([0x1f, 0x8b, 0x08]);
      for (let at = binary.indexOf(gzipMagic); at !== -1; at = binary.indexOf(gzipMagic, at + 1)) {
        let file: protobuf.Message & { name?: string; package?: string };
        try {
          // Z_SYNC_FLUSH: stop at the stream's end, whatever bytes follow it in the binary.
          file = descriptor.FileDescriptorProto.decode(gunzipSync(binary.subarray(at, at + 1_000_000), { finishFlush: zlibConstants.Z_SYNC_FLUSH }));
        } catch {
          continue; // not a gzip stream, or not a descriptor
        }
        if (ETCD_PACKAGES.includes(file.package as (typeof ETCD_PACKAGES)[number]) && /^(rpc|kv|auth)\.proto$/.test(file.name ?? "")) found.set(file.name!, file);
      }
      return [...found.values()];
    }

    test(`the vendored protos describe exactly the messages and methods compiled into the etcd under test${ADDED_SINCE_3_5[line].length > 0 ? `, but for what ${line} added` : ""}`, async () => {
      const compiled = descriptorsInBinary(await readFile(core.release.etcd));
      assert.equal(compiled.length, 3, `rpc.proto, kv.proto and auth.proto in ${core.release.etcd}`);
      const fromBinary = shape(rootOf(compiled), ETCD_PACKAGES);
      const vendored = shape(rootOf(fileDescriptorProtos.map((b) => descriptor.FileDescriptorProto.decode(b))), ETCD_PACKAGES);
      assert.ok(fromBinary.includes(".etcdserverpb.RangeRequest.range_end = 2 bytes"), `read from the binary: ${fromBinary.slice(0, 5).join("; ")}…`);
      assert.deepEqual(vendored.filter((l) => !fromBinary.includes(l)), [], "every vendored type, field and method is in the binary");
      assert.deepEqual(fromBinary.filter((l) => !vendored.includes(l)), ADDED_SINCE_3_5[line], "what the binary has beyond the vendored protos");
    });

    // -----------------------------------------------------------------------------------------
    // KV
    // -----------------------------------------------------------------------------------------

    test("put, range, txn and deleteRange round trips", async () => {
      const put = await client.kv.put({ key: "kv/a", value: "1" });
      const got = await client.kv.range({ key: "kv/a" });
      assert.deepEqual(got.kvs.map((kv) => [text(kv.key), text(kv.value), kv.mod_revision]), [["kv/a", "1", put.header!.revision]]);

      // kube-apiserver's update: if mod_revision == X then put else range.
      const swap = (expected: string, value: string) =>
        client.kv.txn({
          compare: [{ key: "kv/a", target: "MOD", result: "EQUAL", mod_revision: expected }],
          success: [{ request_put: { key: "kv/a", value, prev_kv: true } }],
          failure: [{ request_range: { key: "kv/a" } }],
        });
      const won = await swap(put.header!.revision, "2");
      assert.equal(won.succeeded, true);
      assert.equal(won.responses[0]!.response, "response_put");
      assert.equal(text(won.responses[0]!.response_put!.prev_kv!.value), "1");
      const lost = await swap(put.header!.revision, "3");
      assert.equal(lost.succeeded, false);
      assert.equal(text(lost.responses[0]!.response_range!.kvs[0]!.value), "2");

      const deleted = await client.kv.deleteRange({ key: "kv/a", prev_kv: true });
      assert.equal(deleted.deleted, "1");
      assert.equal(text(deleted.prev_kvs[0]!.value), "2");
      assert.deepEqual((await client.kv.range({ key: "kv/a" })).kvs, []);
    });

    // Where etcd 3.5 honours a range_end that is present but empty ("every key >= key"), measured on
    // 3.5.16. Only requests served without raft see it: Range, and a read-only Txn (its compares
    // too). A request applied through raft (DeleteRange, any Txn that writes) is re-encoded by etcd
    // first, where an empty range_end is not written: it reaches the store absent, "this key only".
    // A Watch turns an empty range_end into absent on purpose (v3rpc/watch.go).
    // Keys start with 0xfe, after every other key this suite writes: "every key >= b" is b and c.
    const high = (suffix: string): Buffer => Buffer.concat([Buffer.from([0xfe]), Buffer.from(suffix)]);
    const names = (keys: Buffer[]): string[] => keys.map((key) => key.subarray(1).toString());

    const RANGE_END_CASES: Array<{ op: string; keys(rangeEnd: Buffer | undefined): Promise<string[]>; empty: string[] }> = [
      { op: "Range", keys: async (rangeEnd) => names((await client.kv.range({ key: high("b"), range_end: rangeEnd })).kvs.map((kv) => kv.key)), empty: ["b", "c"] },
      {
        op: "read-only Txn's Range",
        keys: async (rangeEnd) => names((await client.kv.txn({ success: [{ request_range: { key: high("b"), range_end: rangeEnd } }] })).responses[0]!.response_range!.kvs.map((kv) => kv.key)),
        empty: ["b", "c"],
      },
      {
        op: "read-only Txn's Compare (every key in range has a value < z)",
        keys: async (rangeEnd) => {
          const txn = await client.kv.txn({ compare: [{ key: high("b"), range_end: rangeEnd, target: "VALUE", result: "LESS", value: "z" }], success: [{ request_range: { key: high("b"), range_end: rangeEnd } }] });
          return txn.succeeded ? names(txn.responses[0]!.response_range!.kvs.map((kv) => kv.key)) : [];
        },
        empty: ["b", "c"],
      },
      {
        op: "writing Txn's Range",
        keys: async (rangeEnd) => names((await client.kv.txn({ success: [{ request_range: { key: high("b"), range_end: rangeEnd } }, { request_put: { key: "txn-write", value: "x" } }] })).responses[0]!.response_range!.kvs.map((kv) => kv.key)),
        empty: ["b"],
      },
      { op: "DeleteRange", keys: async (rangeEnd) => names((await client.kv.deleteRange({ key: high("b"), range_end: rangeEnd, prev_kv: true })).prev_kvs.map((kv) => kv.key)), empty: ["b"] },
      {
        op: "Watch (keys of the events for a put of c, then b; sorted)",
        keys: async (rangeEnd) => {
          const watch = client.watch();
          try {
            watch.create({ key: high("b"), range_end: rangeEnd });
            assert.equal((await watch.next()).created, true);
            await client.kv.put({ key: high("c"), value: "c" });
            await client.kv.put({ key: high("b"), value: "b" });
            const seen: Buffer[] = [];
            while (!seen.some((key) => key.equals(high("b")))) seen.push(...(await watch.next()).events.map((e) => e.kv!.key));
            return names(seen).sort();
          } finally {
            watch.cancel();
          }
        },
        empty: ["b"],
      },
    ];

    for (const { op, keys, empty } of RANGE_END_CASES) {
      test(`range_end on ${op}: present but empty reads ${JSON.stringify(empty)}, absent ["b"], "\\0" ["b","c"]`, { timeout: 30_000 }, async () => {
        const reset = async (): Promise<void> => {
          await client.kv.deleteRange({ key: high(""), range_end: Buffer.from([0]) });
          for (const k of ["a", "b", "c"]) await client.kv.put({ key: high(k), value: k });
        };
        const read = async (rangeEnd: Buffer | undefined): Promise<string[]> => {
          await reset();
          return keys(rangeEnd);
        };
        assert.deepEqual(await read(Buffer.alloc(0)), empty, "present but empty");
        assert.deepEqual(await read(undefined), ["b"], "absent");
        assert.deepEqual(await read(Buffer.from([0])), ["b", "c"], "\\0");
      });
    }

    test("errors carry etcd's gRPC code and message", async () => {
      const duplicate = client.kv.txn({ success: [{ request_put: { key: "dup", value: "1" } }, { request_put: { key: "dup", value: "2" } }] });
      assert.equal((await expectGrpcError(duplicate, GrpcStatus.INVALID_ARGUMENT)).details, "etcdserver: duplicate key given in txn request");
      // etcd's gRPC server takes messages up to --max-request-bytes (1.5 MiB) plus 512 KiB.
      const tooBig = client.kv.put({ key: "big", value: Buffer.alloc(2 * 1024 * 1024) });
      assert.match((await expectGrpcError(tooBig, GrpcStatus.RESOURCE_EXHAUSTED)).details, /received message larger than max/);
    });

    // -----------------------------------------------------------------------------------------
    // Watch
    // -----------------------------------------------------------------------------------------

    /** Responses of `stream` until `count` events arrived (etcd may batch events of one revision). */
    async function events(stream: { next(timeoutMs?: number): Promise<WatchResponse> }, count: number): Promise<Event[]> {
      const collected: Event[] = [];
      while (collected.length < count) collected.push(...(await stream.next()).events);
      return collected;
    }

    test("watch with prev_kv: created, then put, put and delete events with the previous values", { timeout: 30_000 }, async () => {
      const watch = client.watch();
      watch.create({ key: "w/", range_end: "w0", prev_kv: true });
      const created = await watch.next();
      assert.equal(created.created, true);
      await client.kv.put({ key: "w/1", value: "v1" });
      await client.kv.put({ key: "w/1", value: "v2" });
      await client.kv.deleteRange({ key: "w/1" });
      const seen = (await events(watch, 3)).map((e) => [e.type, text(e.kv?.value), text(e.prev_kv?.value)]);
      // A delete event carries no value; a create has no previous value.
      assert.deepEqual(seen, [["PUT", "v1", undefined], ["PUT", "v2", "v1"], ["DELETE", "", "v2"]]);
      watch.cancelWatch(created.watch_id);
      const canceled = await watch.next();
      assert.deepEqual([canceled.watch_id, canceled.canceled], [created.watch_id, true]);
      // etcd keeps a half-closed watch stream open (measured on 3.5.16): only the client ends it.
      watch.cancel();
      assert.equal((await watch.closed)?.code, GrpcStatus.CANCELLED);
    });

    // kube-apiserver's consistent reads from its watch cache wait for this answer (3 s without one).
    // Measured on 3.5.16: about 1 ms; watch_id -1, no events, the store's revision in the header
    // (writes outside the watched range included). A stream without any watcher gets no answer.
    test("a watch progress request is answered within 100 ms with watch_id -1 and the latest revision", { timeout: 30_000 }, async () => {
      const watch = client.watch();
      watch.create({ key: "progress/" });
      assert.equal((await watch.next()).created, true);
      const latest = (await client.kv.put({ key: "elsewhere", value: "x" })).header!.revision;
      const sent = performance.now();
      watch.requestProgress();
      const progress = await watch.next(1_000);
      const elapsedMs = performance.now() - sent;
      assert.equal(progress.watch_id, "-1");
      assert.deepEqual([progress.created, progress.canceled, progress.events], [false, false, []]);
      assert.ok(BigInt(progress.header!.revision) >= BigInt(latest), `progress revision ${progress.header!.revision} < latest write ${latest}`);
      assert.ok(elapsedMs < 100, `answered after ${elapsedMs.toFixed(1)} ms`);
      watch.cancel();
      assert.equal((await watch.closed)?.code, GrpcStatus.CANCELLED);
    });

    // -----------------------------------------------------------------------------------------
    // Lease
    // -----------------------------------------------------------------------------------------

    test("lease: grant, keepalive, timeToLive with keys, leases, revoke; 63-bit IDs exact", { timeout: 30_000 }, async () => {
      const granted = await client.lease.grant({ TTL: 60 });
      assert.equal(granted.TTL, "60");
      assert.ok(BigInt(granted.ID) > BigInt(Number.MAX_SAFE_INTEGER), `lease ID ${granted.ID} needs more than a double's 53 bits`);
      await client.kv.put({ key: "leased", value: "x", lease: granted.ID });

      const keepAlive = client.lease.keepAlive();
      keepAlive.keepAlive(granted.ID);
      assert.deepEqual(await keepAlive.next().then((r) => [r.ID, r.TTL]), [granted.ID, "60"]);
      keepAlive.cancel();

      const ttl = await client.lease.timeToLive({ ID: granted.ID, keys: true });
      assert.equal(ttl.grantedTTL, "60");
      assert.ok(Number(ttl.TTL) > 0 && Number(ttl.TTL) <= 60, `TTL ${ttl.TTL}`);
      assert.deepEqual(ttl.keys.map(text), ["leased"]);
      // etcdctl, a second client, lists the same ID (in 16 hex digits).
      const listed = await core.etcdctl(["lease", "list"]);
      assert.match(listed.stdout, new RegExp(`^${BigInt(granted.ID).toString(16).padStart(16, "0")}$`, "m"));
      assert.ok((await client.lease.leases({})).leases.some((l) => l.ID === granted.ID));

      await client.lease.revoke({ ID: granted.ID });
      assert.equal((await client.lease.timeToLive({ ID: granted.ID })).TTL, "-1");
      assert.deepEqual((await client.kv.range({ key: "leased" })).kvs, [], "revoking deletes the lease's keys");
    });

    // -----------------------------------------------------------------------------------------
    // Maintenance, cluster, auth, unknown methods, TLS
    // -----------------------------------------------------------------------------------------

    test(`maintenance: status reports the etcd under test (${line}) and itself as leader`, async () => {
      const status = await client.maintenance.status({});
      assert.match(status.version, new RegExp(`^${line.replace(".", "\\.")}\\.\\d+$`));
      assert.equal(status.version, core.release.version);
      assert.equal(status.leader, status.header!.member_id);
      assert.ok(Number(status.dbSize) > 0);
    });

    test("maintenance: alarm, hashKV, defragment and a snapshot of the whole database", async () => {
      assert.deepEqual((await client.maintenance.alarm({ action: "GET" })).alarms, []);
      assert.equal(typeof (await client.maintenance.hashKV({})).hash, "number");
      await client.maintenance.defragment({});
      const snapshot = await client.maintenance.snapshot();
      // A bbolt file: its first page's magic 0xED0CDAED at offset 16.
      assert.equal(snapshot.blob.readUInt32LE(16), 0xed0cdaed);
    });

    test("cluster and auth: the single member with its client URL; auth disabled, no users", async () => {
      const { members } = await client.cluster.memberList({});
      assert.deepEqual(members.map((m) => [m.name, m.clientURLs]), [["core", [core.endpoint]]]);
      assert.equal((await client.auth.authStatus({})).enabled, false);
      assert.deepEqual((await client.auth.userList({})).users, []);
      assert.deepEqual(await client.call("/etcdserverpb.Auth/RoleList", {}).then((r) => (r as { roles: string[] }).roles), []);
    });

    test("an unknown method or service is UNIMPLEMENTED from core etcd", async () => {
      const method = await expectGrpcError(client.unary("/etcdserverpb.KV/RangeStream", Buffer.alloc(0)), GrpcStatus.UNIMPLEMENTED);
      assert.equal(method.details, "unknown method RangeStream for service etcdserverpb.KV");
      const service = await expectGrpcError(client.unary("/etcdserverpb.Nope/Range", Buffer.alloc(0)), GrpcStatus.UNIMPLEMENTED);
      assert.equal(service.details, "unknown service etcdserverpb.Nope");
    });

    test("a client without a certificate is refused in the TLS handshake, and writes nothing", async () => {
      const certless = connect(core.endpoint, { ca: core.tls.ca });
      try {
        const refused = await expectGrpcError(certless.kv.put({ key: "sneaky", value: "x" }), GrpcStatus.UNAVAILABLE);
        assert.match(refused.details, /certificate required/);
      } finally {
        certless.close();
      }
      assert.deepEqual((await client.kv.range({ key: "sneaky" })).kvs, []);
    });

    test("servername: the server certificate is checked against it (it names localhost, not other.example)", async () => {
      for (const [servername, works] of [["localhost", true], ["other.example", false]] as const) {
        const named = connect(core.endpoint, { ...core.tls, servername });
        try {
          const call = named.maintenance.status({});
          if (works) assert.equal((await call).version, core.release.version);
          else assert.match((await expectGrpcError(call, GrpcStatus.UNAVAILABLE)).details, /other\.example/);
        } finally {
          named.close();
        }
      }
    });

    test("compaction: reading a compacted revision is OUT_OF_RANGE", async () => {
      const first = (await client.kv.put({ key: "history", value: "1" })).header!.revision;
      const second = (await client.kv.put({ key: "history", value: "2" })).header!.revision;
      await client.kv.compact({ revision: second });
      const old = await expectGrpcError(client.kv.range({ key: "history", revision: first }), GrpcStatus.OUT_OF_RANGE);
      assert.equal(old.details, "etcdserver: mvcc: required revision has been compacted");
    });

    test("startCoreEtcd passes extra flags to etcd: --max-request-bytes refuses a larger put", async () => {
      const small = await startCoreEtcd(await tempDir("etcd-flags-"), { line, extraFlags: ["--max-request-bytes=4096"] });
      const c = connect(small.endpoint, small.tls);
      try {
        await c.kv.put({ key: "fits", value: Buffer.alloc(1024) });
        const refused = await expectGrpcError(c.kv.put({ key: "too-large", value: Buffer.alloc(8192) }), GrpcStatus.INVALID_ARGUMENT);
        assert.equal(refused.details, "etcdserver: request is too large");
      } finally {
        c.close();
        await small.stop();
      }
    });
  });
}
