// When and how the gateway's usage view confirms itself with core etcd (gateway/tenant/usage.ts): a write
// never goes ahead on a view older than CURRENT_WITHIN_MS, and under steady writes none waits,
// because the confirmation starts once the last one is half that old; a progress request answers
// it where the core's version answers them safely, a read otherwise or when no answer comes, and
// reads take turns so that they cost core etcd at most a tenth of its time. Core
// etcd is a stand-in here whose answers the test releases; e2e/quota.test.ts runs the view
// against real etcd.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { createLogger } from "../../gateway/log.ts";
import { frame, frameWriter } from "../../gateway/wire/grpc.ts";
import { TenantKeyspace } from "../../gateway/keys.ts";
import type { CoreAnswer, CoreConnection } from "../../gateway/core/upstream.ts";
import { answersProgressSafely, CURRENT_WITHIN_MS, TenantUsage, type Confirmation } from "../../gateway/tenant/usage.ts";

/** A RangeResponse with no keys, at `revision`. */
function emptyPage(revision: number): Buffer {
  const writer = frameWriter(16);
  const header = writer.begin(1, 4);
  writer.varintField(3, revision);
  writer.finish(header);
  return frame(writer).subarray(5);
}

/** A message with a header at `revision` and the given extra fields. */
function message(revision: number, fields: (writer: ReturnType<typeof frameWriter>) => void = () => {}): Buffer {
  const writer = frameWriter(64);
  const header = writer.begin(1, 4);
  writer.varintField(3, revision);
  writer.finish(header);
  fields(writer);
  return frame(writer);
}

/** A StatusResponse naming `version`. */
function status(version: string): Buffer {
  return message(1, (writer) => writer.bytesField(2, Buffer.from(version))).subarray(5);
}

/** The core's side of the view's watch: what the view writes, and answers the test sends. */
class HeldWatch extends EventEmitter {
  readonly written: Buffer[] = [];
  closed = false;
  write(chunk: Buffer): boolean {
    this.written.push(chunk);
    return true;
  }
  close(): void {
    this.closed = true;
    this.emit("close");
  }
  /** The answer to a progress request: watch ID -1 at `revision`. */
  progress(revision: number): void {
    this.emit("data", message(revision, (writer) => writer.bigintField(2, -1n)));
  }
}

/** Core etcd's stand-in: calls wait until the test answers them; the watch opens once asked. */
class HeldCore {
  readonly calls: { path: string; resolve: (answer: CoreAnswer) => void }[] = [];
  readonly watch = new HeldWatch();
  call(path: string): Promise<CoreAnswer> {
    return new Promise((resolve) => this.calls.push({ path, resolve }));
  }
  open(): Promise<HeldWatch> {
    return Promise.resolve(this.watch);
  }
  answer(path: string, answer: Partial<CoreAnswer>): void {
    const call = this.calls.shift()!;
    assert.equal(call.path, path);
    call.resolve({ code: 0, message: "", ...answer });
  }
  /** The count, then the version the view asks for before it watches. */
  async start(revision: number, version: string): Promise<void> {
    this.answer("/etcdserverpb.KV/Range", { body: emptyPage(revision) });
    await settled();
    this.answer("/etcdserverpb.Maintenance/Status", { body: status(version) });
    await settled();
  }
}

const settled = () => new Promise((resolve) => setImmediate(resolve));

function view(core: HeldCore, clock: { now: number }): { usage: TenantUsage; confirmations: Confirmation[] } {
  const usage = new TenantUsage(core as unknown as CoreConnection, new TenantKeyspace("/etcdstorage/t/"), createLogger("silent"), () => clock.now);
  const confirmations: Confirmation[] = [];
  usage.onConfirmation((how) => confirmations.push(how));
  usage.start();
  return { usage, confirmations };
}

const RANGE = "/etcdserverpb.KV/Range";

/** A write asking whether it may add bytes; `admitted` is set once the view answers. */
async function aWrite(usage: TenantUsage): Promise<{ admitted?: boolean }> {
  const write: { admitted?: boolean } = {};
  void usage.ensureCurrent().then((current) => (write.admitted = current));
  await settled();
  return write;
}

test("a confirmation starts at half the allowed age without holding writes; past the allowed age, writes wait for it", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const core = new HeldCore();
  const clock = { now: 0 };
  const { usage, confirmations } = view(core, clock);
  assert.equal(await usage.ensureCurrent(), false, "not counted yet");
  await core.start(10, "3.5.12"); // a version whose progress answers are not safe: reads only
  assert.equal(core.calls.length, 0);

  clock.now = CURRENT_WITHIN_MS * 0.4;
  assert.equal(await usage.ensureCurrent(), true);
  assert.equal(core.calls.length, 0, "fresh: nothing to confirm");

  // A tenant idle for longer than the allowed age: its next write waits for a confirmation.
  clock.now = CURRENT_WITHIN_MS * 1.1;
  const idle = await aWrite(usage);
  assert.equal(idle.admitted, undefined, "past the allowed age a write waits for the confirmation");
  assert.equal(core.calls.length, 1);
  core.answer(RANGE, { body: emptyPage(12) });
  await settled();
  assert.equal(idle.admitted, true);
  assert.equal(usage.revision, 12);
  assert.deepEqual(confirmations, ["read"]);
  assert.equal(core.watch.written.filter((w) => w.length === 7).length, 0, "no progress request to a core that answers them unsafely");

  clock.now = CURRENT_WITHIN_MS * 1.7;
  assert.equal(await usage.ensureCurrent(), true, "still within the allowed age: the write goes on");
  assert.equal(core.calls.length, 1, "and a confirmation is on its way");
  clock.now = CURRENT_WITHIN_MS * 1.8;
  assert.equal(await usage.ensureCurrent(), true);
  assert.equal(core.calls.length, 1, "one confirmation at a time");
  core.answer(RANGE, { body: emptyPage(13) }); // it took a tenth of the allowed age
  await settled();
  assert.deepEqual(confirmations, ["read", "read"]);

  // Confirmed as of when the read was sent (1.7): at 2.6 the view is still fresh enough (and the
  // next confirmation starts, its read once its turn comes at 2.7), at 2.8 it is not.
  clock.now = CURRENT_WITHIN_MS * 2.6;
  assert.equal(await usage.ensureCurrent(), true);
  clock.now = CURRENT_WITHIN_MS * 2.8;
  const late = await aWrite(usage);
  t.mock.timers.tick(CURRENT_WITHIN_MS * 0.1);
  await settled();
  assert.equal(late.admitted, undefined);
  core.answer(RANGE, { code: 14, message: "unavailable" });
  await settled();
  assert.equal(late.admitted, false, "a confirmation core etcd refused admits no growth");
  usage.stop();
});

test("on etcd 3.5.13+, a progress answer at or past the store's revision confirms the view; a stale or missing one leaves it to the read", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const core = new HeldCore();
  const clock = { now: 0 };
  const { usage, confirmations } = view(core, clock);
  await core.start(10, "3.5.16");
  const progressRequests = () => core.watch.written.filter((w) => w.equals(Buffer.from([0, 0, 0, 0, 2, 0x1a, 0]))).length;

  clock.now = CURRENT_WITHIN_MS * 1.2;
  let write = await aWrite(usage);
  core.answer(RANGE, { body: emptyPage(15) }); // the store's revision, from a read of one key
  await settled();
  assert.equal(progressRequests(), 1);
  core.watch.progress(15);
  await settled();
  assert.equal(write.admitted, true);
  assert.equal(usage.revision, 15, "every event up to the progress revision was delivered before it");
  assert.deepEqual(confirmations, ["progress"]);

  // An answer short of the store's revision (to an earlier request, or deferred) confirms nothing;
  // with none in time, the read that sorts the prefix decides.
  clock.now = CURRENT_WITHIN_MS * 2.5;
  write = await aWrite(usage);
  core.answer(RANGE, { body: emptyPage(18) });
  await settled();
  assert.equal(progressRequests(), 2);
  core.watch.progress(17);
  await settled();
  assert.equal(write.admitted, undefined, "a progress answer at 17 says nothing of writes up to 18");
  t.mock.timers.tick(200);
  await settled();
  assert.equal(core.calls.length, 1, "no answer at 18 within 200 ms: the read");
  core.answer(RANGE, { body: emptyPage(18) });
  await settled();
  assert.equal(write.admitted, true);
  assert.deepEqual(confirmations, ["progress", "read"]);
  usage.stop();
});

test("fallback reads take turns: after a read that took d, none until nine times d later, and writes that need one wait for it", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const core = new HeldCore();
  const clock = { now: 0 };
  const { usage, confirmations } = view(core, clock);
  await core.start(10, "3.5.12"); // reads only

  clock.now = 1200;
  const first = await aWrite(usage);
  assert.equal(core.calls.length, 1);
  clock.now = 1500; // the read took 300 ms: a tenant with many keys
  core.answer(RANGE, { body: emptyPage(12) });
  await settled();
  assert.equal(first.admitted, true);

  // Confirmed as of 1200: at 1800 the next confirmation starts, but its read waits for its turn,
  // 1500 + 9 x 300 = 4200, while writes still within the allowed age go on.
  clock.now = 1800;
  assert.equal(await usage.ensureCurrent(), true);
  await settled();
  assert.equal(core.calls.length, 0, "no read before its turn");
  clock.now = 2300;
  const waiting = await aWrite(usage);
  t.mock.timers.tick(2399);
  await settled();
  assert.equal(core.calls.length, 0, "still not its turn");
  assert.equal(waiting.admitted, undefined, "past the allowed age, a write waits for the read");
  t.mock.timers.tick(1);
  clock.now = 4200;
  await settled();
  assert.equal(core.calls.length, 1, "its turn: the read");
  core.answer(RANGE, { body: emptyPage(14) });
  await settled();
  assert.equal(waiting.admitted, true);
  assert.deepEqual(confirmations, ["read", "read"]);
  usage.stop();
});

test("which etcd versions answer progress requests safely: kube-apiserver's rule", () => {
  for (const version of ["3.4.31", "3.4.40", "3.5.13", "3.5.16", "3.6.0", "3.6.5", "4.0.0"]) assert.equal(answersProgressSafely(version), true, version);
  for (const version of ["3.4.30", "3.5.0", "3.5.12", "3.3.27", "2.3.8", "", "unknown"]) assert.equal(answersProgressSafely(version), false, version);
});
