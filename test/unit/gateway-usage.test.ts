// When the gateway's usage view confirms itself with core etcd (gateway/usage.ts): a write never
// goes ahead on a view older than CURRENT_WITHIN_MS, and under steady writes none waits, because
// the confirmation starts once the last one is half that old. Core etcd is a stand-in here whose
// answers the test releases; e2e/quota.test.ts runs the view against real etcd.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { frame, frameWriter } from "../../gateway/grpc.ts";
import { TenantKeyspace } from "../../gateway/keys.ts";
import type { CoreAnswer, CoreConnection } from "../../gateway/upstream.ts";
import { CURRENT_WITHIN_MS, TenantUsage } from "../../gateway/usage.ts";

/** A RangeResponse with no keys, at `revision`. */
function emptyPage(revision: number): Buffer {
  const writer = frameWriter(16);
  const header = writer.begin(1, 4);
  writer.varintField(3, revision);
  writer.finish(header);
  return frame(writer).subarray(5);
}

/** Core etcd's stand-in: Range calls wait until the test answers them; the watch never opens. */
class HeldCore {
  readonly calls: ((answer: CoreAnswer) => void)[] = [];
  call(): Promise<CoreAnswer> {
    return new Promise((resolve) => this.calls.push(resolve));
  }
  open(): Promise<never> {
    return new Promise(() => {});
  }
  answer(revision: number): void {
    this.calls.shift()!({ code: 0, message: "", body: emptyPage(revision) });
  }
}

const settled = () => new Promise((resolve) => setImmediate(resolve));

test("a confirmation starts at half the allowed age without holding writes; past the allowed age, writes wait for it", async () => {
  const core = new HeldCore();
  let clock = 0;
  const usage = new TenantUsage(core as unknown as CoreConnection, new TenantKeyspace("/etcdstorage/t/"), pino({ level: "silent" }), () => clock);
  usage.start();
  assert.equal(await usage.ensureCurrent(), false, "not counted yet");
  core.answer(10); // the count
  await settled();
  assert.equal(core.calls.length, 0);

  clock = CURRENT_WITHIN_MS * 0.4;
  assert.equal(await usage.ensureCurrent(), true);
  assert.equal(core.calls.length, 0, "fresh: nothing to confirm");

  clock = CURRENT_WITHIN_MS * 0.6;
  assert.equal(await usage.ensureCurrent(), true, "still within the allowed age: the write goes on");
  assert.equal(core.calls.length, 1, "and a confirmation is on its way");
  clock = CURRENT_WITHIN_MS * 0.7;
  assert.equal(await usage.ensureCurrent(), true);
  assert.equal(core.calls.length, 1, "one confirmation at a time");

  clock = CURRENT_WITHIN_MS * 1.1;
  let admitted: boolean | undefined;
  void usage.ensureCurrent().then((current) => (admitted = current));
  await settled();
  assert.equal(admitted, undefined, "past the allowed age a write waits for the confirmation");
  core.answer(12);
  await settled();
  assert.equal(admitted, true);
  assert.equal(usage.revision, 12);

  // Confirmed as of when the read was sent (0.6): at 1.5 the view is still fresh enough (and the
  // next confirmation starts), at 1.7 it is not.
  clock = CURRENT_WITHIN_MS * 1.5;
  assert.equal(await usage.ensureCurrent(), true);
  assert.equal(core.calls.length, 1);
  clock = CURRENT_WITHIN_MS * 1.7;
  let late: boolean | undefined;
  void usage.ensureCurrent().then((current) => (late = current));
  await settled();
  assert.equal(late, undefined);
  core.calls.shift()!({ code: 14, message: "unavailable" });
  await settled();
  assert.equal(late, false, "a confirmation core etcd refused admits no growth");
  usage.stop();
});
