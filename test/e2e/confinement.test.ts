// Issue 10 (confinement): through its gateway a tenant reaches its own keys and leases and nothing
// else. Every etcd method that is not served is refused by name, with a request that would hurt
// the host if it got through; the host's data, leases, revisions, alarms and members are then
// checked directly on core etcd. A host lease looks, through the gateway, exactly like a lease
// that does not exist. Clients without the tenant's client certificate are refused.
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { testConfig } from "../support/requests.ts";
import { connect, encodeRequest, EtcdGrpcError, expectGrpcError, GrpcStatus, type EtcdClient, type Int64 } from "../support/etcd-client.ts";
import { assertServing, keysOutside, pb, tenantClient, tenantTls } from "./gateway-kit.ts";
import { startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";
import { startTenant, type RunningTenant } from "./tenant.ts";

const spec = (name: string) => ({ clientCertSecret: [{ name: "etcd-client", namespace: `${name}-system` }] });
const MARKER = "/registry/secrets/kube-system/host-marker";
const ON_LEASE = "/registry/masterleases/10.0.0.1";
const HOST_LEASE_TTL = 600;
// What the issue serves; every other method of etcd's rpc.proto must be in REFUSED below.
const SERVED = [
  "/etcdserverpb.KV/Range",
  "/etcdserverpb.KV/Put",
  "/etcdserverpb.KV/DeleteRange",
  "/etcdserverpb.KV/Txn",
  "/etcdserverpb.Watch/Watch",
  "/etcdserverpb.Lease/LeaseGrant",
  "/etcdserverpb.Lease/LeaseRevoke",
  "/etcdserverpb.Lease/LeaseKeepAlive",
  "/etcdserverpb.Lease/LeaseTimeToLive",
  "/etcdserverpb.Maintenance/Status",
];

/** Every method of the vendored rpc.proto, as a gRPC path. */
function rpcProtoMethods(): string[] {
  const protoDir = fileURLToPath(new URL("../support/etcd-proto/", import.meta.url));
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(protoDir, target);
  root.loadSync("etcd/api/etcdserverpb/rpc.proto");
  const services = (root.lookup("etcdserverpb") as protobuf.Namespace).nestedArray.filter((n): n is protobuf.Service => n instanceof protobuf.Service);
  return services.flatMap((service) => service.methodsArray.map((m) => `/etcdserverpb.${service.name}/${m.name}`));
}

/**
 * A lease's remaining TTL once it is two seconds below its grant: etcd reports whole seconds
 * rounded down, so only then would a refresh (back to the grant, reported as grant - 1) show.
 */
const countedDown = (client: EtcdClient, id: Int64, granted: number) =>
  waitFor(`lease ${id} to count down`, async () => {
    const { TTL } = await client.lease.timeToLive({ ID: id });
    return Number(TTL) > 0 && Number(TTL) <= granted - 2 ? Number(TTL) : undefined;
  });

describe("confinement: a tenant reaches its own keys and leases, and nothing else", () => {
  let dir: string;
  let core: CoreEtcd;
  let tenant: RunningTenant;
  let other: RunningTenant;
  let host: EtcdClient;
  let client: EtcdClient;
  let pid: number | undefined;
  let hostLease: string;
  let memberId: string;
  /** The revision of the marker's first value: readable as long as nothing compacted. */
  let oldRevision: string;

  before(async () => {
    dir = await tempDir("confinement-");
    core = await startCoreEtcd(dir);
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    [tenant, other] = await Promise.all([startTenant(config, core, "t", spec("t"), path.join(dir, "t")), startTenant(config, core, "u", spec("u"), path.join(dir, "u"))]);
    pid = tenant.proxy.gateway.process.pid;
    host = connect(core.endpoint, core.tls);
    oldRevision = (await host.kv.put({ key: MARKER, value: "first" })).header!.revision;
    await host.kv.put({ key: MARKER, value: "host value" });
    hostLease = (await host.lease.grant({ TTL: HOST_LEASE_TTL })).ID;
    await host.kv.put({ key: ON_LEASE, value: "10.0.0.1", lease: hostLease });
    memberId = (await host.maintenance.status({})).header!.member_id;
    client = await tenantClient(tenant);
  });
  after(async () => {
    client?.close();
    host?.close();
    await stopAll();
  });

  test("every method that is not served answers UNIMPLEMENTED naming it, and nothing of the host changes", async () => {
    const revision = (await host.kv.range({ key: MARKER })).header!.revision;
    const keyBytes = Buffer.from(MARKER);
    // Each with a request that would hurt the host if it reached core etcd.
    const refused: [string, object][] = [
      ["/etcdserverpb.KV/Compact", { revision, physical: true }],
      ["/etcdserverpb.Lease/LeaseLeases", {}],
      ["/etcdserverpb.Cluster/MemberAdd", { peerURLs: ["http://127.0.0.1:1"], isLearner: false }],
      ["/etcdserverpb.Cluster/MemberRemove", { ID: memberId }],
      ["/etcdserverpb.Cluster/MemberUpdate", { ID: memberId, peerURLs: ["http://127.0.0.1:1"] }],
      ["/etcdserverpb.Cluster/MemberList", { linearizable: true }],
      ["/etcdserverpb.Cluster/MemberPromote", { ID: memberId }],
      ["/etcdserverpb.Maintenance/Alarm", { action: "ACTIVATE", memberID: memberId, alarm: "NOSPACE" }],
      ["/etcdserverpb.Maintenance/Alarm", { action: "DEACTIVATE", memberID: memberId, alarm: "NOSPACE" }],
      ["/etcdserverpb.Maintenance/Defragment", {}],
      ["/etcdserverpb.Maintenance/Hash", {}],
      ["/etcdserverpb.Maintenance/HashKV", { revision }],
      ["/etcdserverpb.Maintenance/MoveLeader", { targetID: memberId }],
      ["/etcdserverpb.Maintenance/Downgrade", { action: "ENABLE", version: "3.4.0" }],
      ["/etcdserverpb.Auth/AuthEnable", {}],
      ["/etcdserverpb.Auth/AuthDisable", {}],
      ["/etcdserverpb.Auth/AuthStatus", {}],
      ["/etcdserverpb.Auth/Authenticate", { name: "root", password: "guess" }],
      ["/etcdserverpb.Auth/UserAdd", { name: "root", password: "tenant-chosen" }],
      ["/etcdserverpb.Auth/UserGet", { name: "root" }],
      ["/etcdserverpb.Auth/UserList", {}],
      ["/etcdserverpb.Auth/UserDelete", { name: "root" }],
      ["/etcdserverpb.Auth/UserChangePassword", { name: "root", password: "tenant-chosen" }],
      ["/etcdserverpb.Auth/UserGrantRole", { user: "tenant", role: "root" }],
      ["/etcdserverpb.Auth/UserRevokeRole", { name: "root", role: "root" }],
      ["/etcdserverpb.Auth/RoleAdd", { name: "root" }],
      ["/etcdserverpb.Auth/RoleGet", { role: "root" }],
      ["/etcdserverpb.Auth/RoleList", {}],
      ["/etcdserverpb.Auth/RoleDelete", { role: "root" }],
      ["/etcdserverpb.Auth/RoleGrantPermission", { name: "tenant", perm: { permType: "READWRITE", key: "\0", range_end: "\0" } }],
      ["/etcdserverpb.Auth/RoleRevokePermission", { role: "root", key: "\0", range_end: "\0" }],
    ];
    // Methods of other etcd APIs, and ones etcd may add later: raw bytes, as the test client has no proto for them.
    const raw: [string, Buffer][] = [
      ["/v3lockpb.Lock/Lock", Buffer.concat([pb.bytes(1, keyBytes), pb.varint(2, BigInt(hostLease))])],
      ["/v3lockpb.Lock/Unlock", pb.bytes(1, keyBytes)],
      ["/v3electionpb.Election/Campaign", Buffer.concat([pb.bytes(1, "/registry/leader"), pb.varint(2, BigInt(hostLease)), pb.bytes(3, "tenant")])],
      ["/grpc.health.v1.Health/Check", pb.bytes(1, "")],
      ["/etcdserverpb.KV/RangeStream", encodeRequest("/etcdserverpb.KV/Range", { key: "\0", range_end: "\0" })],
      ["/etcdserverpb.Future/Call", Buffer.concat([pb.bytes(1, keyBytes), pb.varint(2, 1)])],
    ];
    assert.deepEqual(new Set([...SERVED, ...refused.map(([p]) => p), "/etcdserverpb.Maintenance/Snapshot"]), new Set(rpcProtoMethods()), "every method of etcd's API is either served or tried here");

    const before = { keys: await keysOutside(host, "/etcdstorage/"), ttl: await countedDown(host, hostLease, HOST_LEASE_TTL), members: (await host.cluster.memberList({})).members };
    const named = (p: string) => (error: EtcdGrpcError) => assert.equal(error.details, `etcdstorage gateway: method ${p} is not served to tenants`);
    for (const [p, request] of refused) named(p)(await expectGrpcError(client.call(p, request), GrpcStatus.UNIMPLEMENTED));
    for (const [p, bytes] of raw) named(p)(await expectGrpcError(client.unary(p, bytes), GrpcStatus.UNIMPLEMENTED));
    named("/etcdserverpb.Maintenance/Snapshot")(await expectGrpcError(client.maintenance.snapshot(), GrpcStatus.UNIMPLEMENTED));
    // etcd's own client (grpc-go) hears the same.
    const etcdctl: [string[], string][] = [
      [["compaction", revision], "/etcdserverpb.KV/Compact"],
      [["member", "remove", BigInt(memberId).toString(16)], "/etcdserverpb.Cluster/MemberRemove"],
      [["snapshot", "save", path.join(dir, "never.db")], "/etcdserverpb.Maintenance/Snapshot"],
      [["defrag"], "/etcdserverpb.Maintenance/Defragment"],
    ];
    for (const [args, p] of etcdctl) {
      const result = await tenant.etcdctl(args);
      assert.notEqual(result.code, 0, args.join(" "));
      assert.ok(result.stderr.includes(`etcdstorage gateway: method ${p} is not served to tenants`), result.stderr);
    }

    assert.deepEqual(await keysOutside(host, "/etcdstorage/"), before.keys, "the host's keys: values, revisions, leases");
    const lease = await host.lease.timeToLive({ ID: hostLease, keys: true });
    assert.ok(Number(lease.TTL) > 0 && Number(lease.TTL) <= before.ttl, `the host lease still counts down (${before.ttl} s, then ${lease.TTL} s): never refreshed`);
    assert.deepEqual(lease.keys.map(String), [ON_LEASE]);
    const old = await host.kv.range({ key: MARKER, revision: oldRevision });
    assert.equal(old.kvs[0]?.value.toString(), "first", "nothing was compacted");
    assert.deepEqual((await host.maintenance.alarm({ action: "GET" })).alarms, [], "no alarm raised");
    assert.deepEqual((await host.cluster.memberList({})).members, before.members);
    assert.equal((await host.auth.authStatus({})).enabled, false);
    assert.deepEqual((await host.auth.userList({})).users, []);
    assert.deepEqual((await host.auth.roleList({})).roles, []);
    await assertServing(tenant, pid, client);
  });

  test("a host lease can be neither kept alive nor inspected: every answer is that for a lease that does not exist", async () => {
    const own = await client.lease.grant({ TTL: 60 });
    await client.lease.revoke({ ID: own.ID });
    // A random 62-bit ID no one granted, and the tenant's own lease once revoked: both do not exist.
    const missing = [String((BigInt(randomInt(1, 2 ** 31)) << 31n) | BigInt(randomInt(0, 2 ** 31))), own.ID];
    const ttlBefore = await countedDown(host, hostLease, HOST_LEASE_TTL);

    /** What a tenant can do with a lease ID, with the ID in each answer checked and then left out. */
    const answers = async (id: Int64) => {
      const keepAlive = client.lease.keepAlive();
      keepAlive.keepAlive(id);
      const kept = await keepAlive.next();
      keepAlive.cancel();
      const inspected = await client.lease.timeToLive({ ID: id, keys: true });
      assert.equal(kept.ID, String(id), "a keepalive answer names the ID asked about");
      assert.equal(inspected.ID, String(id), "a TimeToLive answer names the ID asked about");
      const failure = (error: unknown) => (error instanceof EtcdGrpcError ? { code: error.code, details: error.details } : Promise.reject(error));
      return {
        keepAlive: { ...kept, ID: "(asked)" },
        timeToLive: { ...inspected, ID: "(asked)" },
        revoke: await client.lease.revoke({ ID: id }).then(() => "revoked", failure),
        put: await client.kv.put({ key: "/registry/events/e", value: "v", lease: id }).then(() => "put", failure),
        txn: await client.kv.txn({ success: [{ request_put: { key: "/registry/events/e", value: "v", lease: id } }] }).then(() => "put", failure),
      };
    };
    const forHostLease = await answers(hostLease);
    const notFound = { code: GrpcStatus.NOT_FOUND, details: "etcdserver: requested lease not found" };
    assert.equal(forHostLease.keepAlive.TTL, "0");
    assert.equal(forHostLease.timeToLive.TTL, "-1");
    assert.deepEqual(forHostLease.timeToLive.keys, []);
    assert.deepEqual(forHostLease.revoke, notFound);
    assert.deepEqual(forHostLease.put, notFound);
    assert.deepEqual(forHostLease.txn, notFound);
    for (const id of missing) assert.deepEqual(forHostLease, await answers(id), `the host lease answers as lease ${id}, which does not exist`);

    const after = await host.lease.timeToLive({ ID: hostLease, keys: true });
    assert.ok(Number(after.TTL) > 0 && Number(after.TTL) <= ttlBefore, `not refreshed: ${ttlBefore} s before, ${after.TTL} s after`);
    assert.deepEqual(after.keys.map(String), [ON_LEASE], "not revoked: its key is still attached");
    assert.deepEqual((await host.kv.range({ key: ON_LEASE })).kvs.map((kv) => kv.lease), [hostLease]);
  });

  test("the tenant's own lease is kept alive, inspected with its keys (without the prefix) and revoked with its keys", async () => {
    const granted = await client.lease.grant({ TTL: 30 });
    assert.equal(granted.TTL, "30");
    for (const key of ["/registry/events/a", "/registry/events/b"]) await client.kv.put({ key, value: "event", lease: granted.ID });
    const onCore = await host.lease.timeToLive({ ID: granted.ID, keys: true });
    assert.deepEqual(onCore.keys.map(String).sort(), ["/etcdstorage/t//registry/events/a", "/etcdstorage/t//registry/events/b"], "core etcd holds the lease under the same ID");

    const counted = await countedDown(client, granted.ID, 30);
    const keepAlive = client.lease.keepAlive();
    keepAlive.keepAlive(granted.ID);
    const kept = await keepAlive.next();
    keepAlive.cancel();
    assert.deepEqual([kept.ID, kept.TTL], [granted.ID, "30"]);
    const inspected = await client.lease.timeToLive({ ID: granted.ID, keys: true });
    assert.ok(Number(inspected.TTL) > counted, `refreshed: ${counted} s before the keepalive, ${inspected.TTL} s after`);
    assert.equal(inspected.grantedTTL, "30");
    // etcd lists a lease's keys in no particular order.
    assert.deepEqual(inspected.keys.map(String).sort(), ["/registry/events/a", "/registry/events/b"]);

    await client.lease.revoke({ ID: granted.ID });
    assert.equal((await client.kv.range({ key: "/registry/events/", range_end: "/registry/events0" })).kvs.length, 0, "the lease's keys went with it");
    assert.equal((await host.kv.range({ key: "/etcdstorage/t//registry/events/", range_end: "/etcdstorage/t//registry/events0" })).kvs.length, 0);
    assert.equal((await client.lease.timeToLive({ ID: granted.ID })).TTL, "-1");
  });

  test("a client without a certificate, or with another tenant's, is refused with UNAUTHENTICATED and a reason", async () => {
    const otherTls = await tenantTls(other);
    const withoutCertificate = await tenantClient(tenant, "none");
    const withOthers = await tenantClient(tenant, { cert: otherTls.cert, key: otherTls.key });
    const othersOwn = await tenantClient(other);
    try {
      // The reason tells a missing certificate from one the tenant's client CA did not issue.
      const refusal = (reason: string) => `etcdstorage gateway: a client certificate issued by this tenant's client CA is required (${reason})`;
      const missing = await expectGrpcError(withoutCertificate.kv.put({ key: "/registry/intruder", value: "none" }), GrpcStatus.UNAUTHENTICATED);
      assert.equal(missing.details, refusal("none presented"));
      const foreign = await expectGrpcError(withOthers.kv.put({ key: "/registry/intruder", value: "u" }), GrpcStatus.UNAUTHENTICATED);
      assert.equal(foreign.details, refusal("UNABLE_TO_VERIFY_LEAF_SIGNATURE"), "OpenSSL's reason: no trusted CA signed it");
      // The same certificate works where it belongs: what is refused is the CA, not a broken certificate.
      await othersOwn.kv.put({ key: "/registry/own", value: "u" });
      assert.deepEqual((await host.kv.range({ key: "/etcdstorage/t//registry/intruder" })).kvs, [], "nothing refused was written");
      for (const credentials of [{ cert: undefined, key: undefined }, { cert: other.credentials.cert, key: other.credentials.key }]) {
        const result = await tenant.etcdctl(["get", "/registry/own"], credentials);
        assert.notEqual(result.code, 0);
        assert.match(result.stderr, /a client certificate issued by this tenant's client CA is required/, "etcdctl shows the gateway's reason");
      }
    } finally {
      for (const c of [withoutCertificate, withOthers, othersOwn]) c.close();
    }
  });
});
