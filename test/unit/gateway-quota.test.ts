// The quota's arithmetic (gateway/tenant/quota.ts) with a moved clock and a usage view of the test's own.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { bytesOf, growthOf, Quota, TokenBucket, type UsageView, type Writes } from "../../gateway/tenant/quota.ts";
import { GrpcError, Status } from "../../gateway/wire/grpc.ts";

const key = (text: string) => Buffer.from(text);
const put = (name: string, bytes: number, keepsValue = false) => ({ key: key(name), bytes, keepsValue });

describe("TokenBucket", () => {
  test("a full bucket lends its capacity at once, then the rate; a debt is a wait", () => {
    const bucket = new TokenBucket(100, 300, 0);
    assert.equal(bucket.take(300, 0), 0);
    assert.equal(bucket.take(50, 0), 500, "50 tokens at 100/s: half a second");
    assert.equal(bucket.take(50, 1000), 0, "a second later the debt is paid and 50 more are there");
    bucket.giveBack(50);
    assert.equal(bucket.take(50, 1000), 0, "what was given back can be taken again");
  });
});

describe("growth and bytes of a request", () => {
  const sizes = new Map([["k", 100]]);
  const sizeOf = (k: Buffer) => sizes.get(k.toString()) ?? 0;
  test("an overwrite adds only its growth; ignore_value adds nothing; a Txn counts its larger branch", () => {
    const writes: Writes = {
      puts: [put("k", 150), put("new", 40), put("k2", 60, true)],
      txns: [{ success: { puts: [put("a", 10)], txns: [] }, failure: { puts: [put("b", 30), put("k", 20)], txns: [] } }],
    };
    assert.equal(growthOf(writes, sizeOf), 50 + 40 + 0 + Math.max(10, 30 + 20 - 100));
    assert.equal(bytesOf(writes), 150 + 40 + 2 + Math.max(10, 50));
  });
});

class View implements UsageView {
  usedBytes = 0;
  revision = 0;
  counting = false;
  current = true;
  private listeners: ((revision: number) => void)[] = [];
  ensureCurrent = async () => this.current;
  sizeOf = () => 0;
  onRevision(listener: (revision: number) => void) {
    this.listeners.push(listener);
  }
  see(revision: number, usedBytes: number) {
    this.revision = revision;
    this.usedBytes = usedBytes;
    for (const listener of this.listeners) listener(revision);
  }
}

describe("Quota", () => {
  const limits = { storageBytes: 1000, writeBytesPerSecond: 1e9, requestsPerSecond: 1e9, replicas: 1, maxRequestBytes: 100 };
  const writes = (bytes: number): Writes => ({ puts: [put(`k${bytes}`, bytes)], txns: [] });
  const code = async (promise: Promise<unknown>) => promise.then(() => Status.OK, (error: GrpcError) => error.code);

  test("growth stays reserved until the view has seen the write; then the usage counts it", async () => {
    const view = new View();
    const quota = new Quota(limits, view, () => {});
    const first = await quota.admitWrite(writes(600));
    quota.settle(first, 5);
    assert.equal(await code(quota.admitWrite(writes(600))), Status.RESOURCE_EXHAUSTED, "600 reserved + 600 > 1000");
    view.see(5, 600);
    assert.equal(await code(quota.admitWrite(writes(400))), Status.OK, "seen: 600 used, 400 left");
  });

  test("a failed write gives its growth back at once; a view that cannot be confirmed admits no growth", async () => {
    const view = new View();
    const quota = new Quota(limits, view, () => {});
    quota.settle(await quota.admitWrite(writes(900)), 0);
    assert.equal(await code(quota.admitWrite(writes(900))), Status.OK);
    view.current = false;
    assert.equal(await code(quota.admitWrite(writes(1))), Status.UNAVAILABLE);
    assert.equal(await code(quota.admitWrite({ puts: [], txns: [] })), Status.OK, "no growth, no check");
  });

  test("each of N replicas admits growth up to 1/N of what is left", async () => {
    const view = new View();
    view.see(1, 400);
    const quota = new Quota({ ...limits, replicas: 3 }, view, () => {});
    assert.equal(await code(quota.admitWrite(writes(201))), Status.RESOURCE_EXHAUSTED, "600 left / 3 = 200");
    assert.equal(await code(quota.admitWrite(writes(200))), Status.OK);
  });

  test("a rate waits up to a second, then refuses, naming the quota; refusals are reported by reason", async () => {
    let now = 0;
    const refused: string[] = [];
    const quota = new Quota({ ...limits, requestsPerSecond: 2, replicas: 2 }, new View(), (reason) => refused.push(reason), () => now);
    assert.equal(quota.admitCall(), undefined, "the first call of the burst passes at once");
    assert.ok(quota.admitCall() instanceof Promise, "the second waits a second");
    await assert.rejects(quota.admitCall()!, (error: GrpcError) => error.code === Status.RESOURCE_EXHAUSTED && /requestsPerSecond 2 per second, 1\/2 of it at each of 2 gateway replicas/.test(error.message));
    assert.deepEqual(refused, ["request_rate"]);
    now = 2000;
    assert.equal(quota.admitCall(), undefined);
  });
});
