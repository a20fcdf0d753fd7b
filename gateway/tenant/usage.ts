// What a tenant stores, as every gateway replica sees it: the live bytes of keys and values under
// its prefix (core keys, prefix included: what the shared etcd holds). Counted once at start
// (pages of a Range pinned to one revision), then kept current by a watch on the prefix, so that
// writes through other replicas, lease expiries and the cleanup Job all count. Each key's size is
// kept, so an overwrite counts only what it adds.
//
// How current the view is matters when several replicas admit writes: quota.ts admits growth only
// while every write committed more than CURRENT_WITHIN_MS ago is known to be in the view. That is
// confirmed ahead of need, by a progress request on the view's watch where core etcd answers them
// safely (3.4.31+, 3.5.13+, 3.6: only once every event up to the revision it names was sent, the
// rule kube-apiserver relies on): a linearizable read of one key gives the store's revision, and a
// progress answer at or past it shows the view holds every write committed before the read. Neither
// costs etcd anything per key. When no such answer comes within PROGRESS_WAIT_MS (etcd defers it
// while the watch is catching up, and until the first write after the watch's start revision), or
// the core is older, a linearizable read of the most recently modified key among those modified
// after the view's revision decides: once the watch has delivered that key's event, the view holds
// every live key as it was when the read was sent (a delete it has not seen yet only makes the
// usage look larger). That read sorts every key under the prefix, so it stays the fallback
// (measured on etcd 3.5.16: 51 ms for 40,000 keys), and it takes turns: after a read that took d,
// the next waits until READ_SPACING x d later, so that however many keys a tenant stores, these
// reads keep core etcd busy at most a tenth of the time per replica; writes that need one wait.
import type { Logger } from "../log.ts";
import { frame, frameWriter } from "../wire/grpc.ts";
import { assertConfined, KEYED_REQUESTS, type TenantKeyspace } from "../keys.ts";
import { answerDecoder, type CoreConnection } from "../core/upstream.ts";
import type { H2Stream } from "../wire/h2.ts";
import { LENGTH_DELIMITED, Reader, VARINT } from "../wire/protobuf.ts";

const PAGE = 1000;
export const CURRENT_WITHIN_MS = 1_000;
const RETRY_MS = 500;
// How long a confirmation waits for the watch to deliver what the read found.
const CATCH_UP_MS = 1_000;
// How long a confirmation waits for the answer to a progress request before reading instead.
const PROGRESS_WAIT_MS = 200;
// After a fallback read that took d, none until READ_SPACING x d later: reads take at most 1/(1 + READ_SPACING) of the time.
const READ_SPACING = 9;
// WatchRequest{progress_request: {}}, framed.
const PROGRESS_REQUEST = Buffer.from([0, 0, 0, 0, 2, 0x1a, 0]);
const EMPTY_FRAME = Buffer.from([0, 0, 0, 0, 0]);
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

export class TenantUsage {
  /** Live bytes under the prefix, exact as of `revision`. */
  usedBytes = 0;
  /** The largest key and value seen under the prefix since it was counted (deletes do not lower it). */
  largestObjectBytes = 0;
  revision = 0;
  private readonly sizes = new Map<string, number>();
  private counted = false;
  /** Every write committed before this moment is in the view. */
  private currentAsOf = -Infinity;
  private confirming: Promise<boolean> | undefined;
  /** When the next fallback read may be sent. */
  private nextReadAt = -Infinity;
  private stream: H2Stream | undefined;
  private stopped = false;
  /** Whether core etcd's version answers progress requests safely (Status, read before each watch). */
  private progressAnswered = false;
  private readonly revisionListeners = new Set<(revision: number) => void>();
  private readonly confirmationListeners = new Set<(how: Confirmation) => void>();
  private readonly core: CoreConnection;
  private readonly keyspace: TenantKeyspace;
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(core: CoreConnection, keyspace: TenantKeyspace, log: Logger, now: () => number = () => performance.now()) {
    this.core = core;
    this.keyspace = keyspace;
    this.log = log;
    this.now = now;
  }

  /** Counts the prefix, then follows it; retries on its own until stopped. */
  start(): void {
    void this.follow(true);
  }

  stop(): void {
    this.stopped = true;
    this.stream?.close();
  }

  /**
   * Whether every write committed more than CURRENT_WITHIN_MS ago is in the view; false when that
   * cannot be confirmed with core etcd. A confirmation starts once the last one is half that old:
   * under steady writes it is done before the view goes stale, and no write waits for it.
   */
  async ensureCurrent(): Promise<boolean> {
    if (!this.counted) return false;
    const age = this.now() - this.currentAsOf;
    if (age > CURRENT_WITHIN_MS / 2) this.confirming ??= this.confirm().finally(() => (this.confirming = undefined));
    return age <= CURRENT_WITHIN_MS || this.confirming!;
  }

  get counting(): boolean {
    return !this.counted;
  }

  /** The bytes a core key holds now (0 if it does not exist). */
  sizeOf(coreKey: Buffer): number {
    return this.sizes.get(coreKey.toString("latin1")) ?? 0;
  }

  /** Called with each revision the view has caught up to. */
  onRevision(listener: (revision: number) => void): void {
    this.revisionListeners.add(listener);
  }

  /** Called with how each successful confirmation was made (for metrics). */
  onConfirmation(listener: (how: Confirmation) => void): void {
    this.confirmationListeners.add(listener);
  }

  /** Never rejects: a confirmation started ahead of need has no caller to take a rejection. */
  private async confirm(): Promise<boolean> {
    try {
      const sentAt = this.now();
      if (this.progressAnswered && (await this.confirmByProgress())) return this.confirmed(sentAt, "progress");
      return await this.confirmByRead();
    } catch (error) {
      this.log.error({ err: (error as Error).message }, "tenant usage: a confirmation failed inside the gateway");
      return false;
    }
  }

  /** The fallback: the most recently modified key after the view's revision, once its turn came. */
  private async confirmByRead(): Promise<boolean> {
    const turn = this.nextReadAt - this.now();
    if (turn > 0) await new Promise((resolve) => setTimeout(resolve, turn).unref());
    const sentAt = this.now();
    const request = this.rangeRequest(this.keyspace.prefix, 0, { limit: 1, keysOnly: true, latestFirst: true, modifiedAfter: this.revision });
    const answer = await this.core.call("/etcdserverpb.KV/Range", {}, request, 64 * 1024);
    this.nextReadAt = this.now() + READ_SPACING * (this.now() - sentAt);
    if (answer.code !== 0 || !answer.body) return false;
    const page = readRangePage(answer.body);
    if (!(await this.reached(page.modRevisions[0] ?? 0, CATCH_UP_MS))) return false;
    // Every live key modified up to the read's revision is seen; what is not is a delete.
    this.setRevision(page.revision);
    return this.confirmed(sentAt, "read");
  }

  private confirmed(sentAt: number, how: Confirmation): true {
    this.currentAsOf = Math.max(this.currentAsOf, sentAt);
    for (const listener of this.confirmationListeners) listener(how);
    return true;
  }

  /**
   * Whether the view holds every write committed before now, shown by a progress answer at or past
   * the store's revision now. That revision comes from a linearizable read of one key (it costs
   * etcd the same whatever the tenant stores), so an answer to an earlier, timed-out request, or
   * one etcd deferred, can only fall short, never confirm too much.
   */
  private async confirmByProgress(): Promise<boolean> {
    const answer = await this.core.call("/etcdserverpb.KV/Range", {}, this.rangeRequest(this.keyspace.prefix, 0, { keysOnly: true, singleKey: true }), 64 * 1024);
    if (answer.code !== 0 || !answer.body) return false;
    const storeRevision = answerRevision(answer.body);
    if (this.revision >= storeRevision) return true;
    if (!this.stream || this.stream.closed) return false;
    this.stream.write(PROGRESS_REQUEST);
    return this.reached(storeRevision, PROGRESS_WAIT_MS);
  }

  /** Whether the view reaches `revision` within `ms`. */
  private reached(revision: number, ms: number): Promise<boolean> {
    if (this.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.revisionListeners.delete(listener);
        resolve(ok);
      };
      const listener = (seen: number) => seen >= revision && done(true);
      const timer = setTimeout(() => done(false), ms);
      this.revisionListeners.add(listener);
    });
  }

  private async follow(recount: boolean): Promise<void> {
    while (!this.stopped) {
      try {
        if (recount) await this.count();
        await this.readVersion();
        recount = await this.watch();
      } catch (error) {
        this.log.warn({ err: (error as Error).message }, "tenant usage: core etcd unreachable; retrying");
      }
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, RETRY_MS).unref());
    }
  }

  /** Whether the core answers progress requests safely, asked before each watch (its member may have changed). */
  private async readVersion(): Promise<void> {
    const status = await this.core.call("/etcdserverpb.Maintenance/Status", {}, EMPTY_FRAME, 64 * 1024);
    this.progressAnswered = status.code === 0 && status.body !== undefined && answersProgressSafely(statusVersion(status.body));
  }

  /** The whole prefix, in pages of one revision. */
  private async count(): Promise<void> {
    const sizes = new Map<string, number>();
    let used = 0;
    let largest = 0;
    let revision = 0;
    let start: Buffer = this.keyspace.prefix;
    const sentAt = this.now();
    for (;;) {
      const request = this.rangeRequest(start, revision, { limit: PAGE });
      const answer = await this.core.call("/etcdserverpb.KV/Range", {}, request, MAX_ANSWER_BYTES);
      if (answer.code !== 0 || !answer.body) throw new Error(`counting the prefix: ${answer.message || `status ${answer.code}`}`);
      const page = readRangePage(answer.body);
      revision ||= page.revision;
      for (const [key, size] of page.sizes) {
        if (size > largest) largest = size;
        sizes.set(key, size);
        used += size;
      }
      if (!page.more || page.lastKey === undefined) break;
      start = Buffer.concat([page.lastKey, Buffer.from([0])]);
    }
    this.sizes.clear();
    for (const [key, size] of sizes) this.sizes.set(key, size);
    this.usedBytes = used;
    this.largestObjectBytes = largest;
    this.setRevision(revision);
    this.counted = true;
    this.currentAsOf = sentAt;
    this.log.info({ usedBytes: used, keys: sizes.size, revision }, "tenant usage counted");
  }

  /** A Range from `start` to the end of the prefix (or of `start` alone). */
  private rangeRequest(start: Buffer, revision: number, options: { limit?: number; keysOnly?: boolean; latestFirst?: boolean; modifiedAfter?: number; singleKey?: boolean }): Buffer {
    const writer = frameWriter(start.length + this.keyspace.prefixEnd.length + 32);
    writer.bytesField(1, start);
    if (!options.singleKey) writer.bytesField(2, this.keyspace.prefixEnd);
    if (options.limit) writer.varintField(3, options.limit);
    if (revision) writer.varintField(4, revision);
    if (options.latestFirst) {
      writer.varintField(5, 2); // sort_order DESCEND
      writer.varintField(6, 3); // sort_target MOD
    }
    if (options.keysOnly) writer.varintField(8, 1);
    if (options.modifiedAfter !== undefined) writer.varintField(10, options.modifiedAfter + 1); // min_mod_revision
    const framed = frame(writer);
    assertConfined(this.keyspace, KEYED_REQUESTS.RangeRequest, framed, 5);
    return framed;
  }

  /** Follows the prefix from the counted revision; resolves true when a recount is needed. */
  private watch(): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const create = frameWriter(this.keyspace.prefix.length * 2 + 32);
      const mark = create.begin(1, this.keyspace.prefix.length * 2 + 16);
      create.bytesField(1, this.keyspace.prefix);
      create.bytesField(2, this.keyspace.prefixEnd);
      create.varintField(3, this.revision + 1);
      create.finish(mark);
      const request = frame(create);
      assertConfined(this.keyspace, KEYED_REQUESTS.WatchRequest, request, 5);
      this.core.open("/etcdserverpb.Watch/Watch", {}).then((stream) => {
        this.stream = stream;
        const decoder = answerDecoder(MAX_ANSWER_BYTES);
        let recount = false;
        stream.on("data", (chunk: Buffer) => {
          try {
            for (const message of decoder.push(chunk)) {
              const answer = readWatchAnswer(message);
              if (answer.compacted) {
                recount = true;
                stream.close();
                return;
              }
              if (answer.canceled) {
                stream.close();
                return;
              }
              // etcd sent every event up to a progress answer's revision before it.
              if (answer.progress) this.setRevision(answer.revision);
              else this.apply(answer);
            }
          } catch (error) {
            this.log.error({ err: (error as Error).message }, "tenant usage: core etcd's watch answer could not be read; following again");
            stream.close();
          }
        });
        stream.on("close", () => {
          this.stream = undefined;
          resolve(recount);
        });
        stream.write(request);
      }, reject);
    });
  }

  private apply(answer: WatchAnswer): void {
    for (const event of answer.events) {
      const key = event.key.toString("latin1");
      const before = this.sizes.get(key) ?? 0;
      if (event.deleted) {
        this.sizes.delete(key);
        this.usedBytes -= before;
      } else {
        this.sizes.set(key, event.size);
        this.usedBytes += event.size - before;
        if (event.size > this.largestObjectBytes) this.largestObjectBytes = event.size;
      }
    }
    // Only events say how far the view has got: a watch answer's header may be ahead of events
    // still to come (a created answer, a catch-up batch in parts).
    for (const event of answer.events) this.setRevision(event.revision);
  }

  private setRevision(revision: number): void {
    if (revision <= this.revision) return;
    this.revision = revision;
    for (const listener of this.revisionListeners) listener(revision);
  }
}

/** A ResponseHeader's revision (field 3). */
export function headerRevision(header: Buffer): number {
  const reader = new Reader(header);
  let revision = 0;
  while (reader.next()) {
    if (reader.field === 3 && reader.wireType === VARINT) revision = reader.uint();
    else reader.skip();
  }
  return revision;
}

/** The revision in the header (field 1) of a KV answer. */
export function answerRevision(message: Buffer): number {
  const reader = new Reader(message);
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) return headerRevision(reader.bytes());
    reader.skip();
  }
  return 0;
}

const NO_KEY: Buffer = Buffer.alloc(0);

/** A key and value's size in core etcd, from a KeyValue's bytes. */
function readKeyValue(buf: Buffer, start: number, end: number): { key: Buffer; size: number; revision: number } {
  const reader = new Reader(buf, start, end);
  let key = NO_KEY;
  let valueBytes = 0;
  let revision = 0;
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) key = reader.bytes();
    else if (reader.field === 5 && reader.wireType === LENGTH_DELIMITED) {
      // Only its length counts: no view of it is made (every write comes back here).
      const [valueStart, valueEnd] = reader.span();
      valueBytes = valueEnd - valueStart;
    }
    else if (reader.field === 3 && reader.wireType === VARINT) revision = reader.uint();
    else reader.skip();
  }
  return { key, size: key.length + valueBytes, revision };
}

interface RangePage {
  revision: number;
  sizes: [string, number][];
  modRevisions: number[];
  more: boolean;
  lastKey?: Buffer;
}

function readRangePage(message: Buffer): RangePage {
  const reader = new Reader(message);
  const page: RangePage = { revision: 0, sizes: [], modRevisions: [], more: false };
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) page.revision = headerRevision(reader.bytes());
    else if (reader.field === 2 && reader.wireType === LENGTH_DELIMITED) {
      const [start, end] = reader.span();
      const kv = readKeyValue(message, start, end);
      page.sizes.push([kv.key.toString("latin1"), kv.size]);
      page.modRevisions.push(kv.revision);
      page.lastKey = kv.key;
    } else if (reader.field === 3 && reader.wireType === VARINT) page.more = reader.uint() !== 0;
    else reader.skip();
  }
  return page;
}

interface WatchAnswer {
  canceled: boolean;
  compacted: boolean;
  /** The answer to a progress request: watch ID -1, nothing else; `revision` is its header's. */
  progress: boolean;
  revision: number;
  events: { deleted: boolean; key: Buffer; size: number; revision: number }[];
}

function readWatchAnswer(message: Buffer): WatchAnswer {
  const reader = new Reader(message);
  const answer: WatchAnswer = { canceled: false, compacted: false, progress: false, revision: 0, events: [] };
  let created = false;
  let watchId = 0n;
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) answer.revision = headerRevision(reader.bytes());
    else if (reader.field === 2 && reader.wireType === VARINT) watchId = reader.bigint();
    else if (reader.field === 3 && reader.wireType === VARINT) created = reader.uint() !== 0;
    else if (reader.field === 4 && reader.wireType === VARINT) answer.canceled = reader.uint() !== 0;
    else if (reader.field === 5 && reader.wireType === VARINT) answer.compacted = reader.uint() !== 0;
    else if (reader.field === 11 && reader.wireType === LENGTH_DELIMITED) {
      const [start, end] = reader.span();
      const event = new Reader(message, start, end);
      let deleted = false;
      let kv: { key: Buffer; size: number; revision: number } | undefined;
      while (event.next()) {
        if (event.field === 1 && event.wireType === VARINT) deleted = event.uint() === 1;
        else if (event.field === 2 && event.wireType === LENGTH_DELIMITED) kv = readKeyValue(message, ...event.span());
        else event.skip();
      }
      answer.events.push({ deleted, key: kv?.key ?? NO_KEY, size: kv?.size ?? 0, revision: kv?.revision ?? 0 });
    } else reader.skip();
  }
  answer.progress = watchId === -1n && !created && !answer.canceled && !answer.compacted && answer.events.length === 0;
  return answer;
}

export type Confirmation = "progress" | "read";

/** etcd versions whose progress answers wait for every event before them (kube-apiserver's rule). */
export function answersProgressSafely(version: string): boolean {
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!match) return false;
  const [major, minor, patch] = match.slice(1).map(Number) as [number, number, number];
  if (major !== 3) return major > 3;
  return minor >= 6 || (minor === 5 && patch >= 13) || (minor === 4 && patch >= 31);
}

/** The version (field 2) of a StatusResponse. */
function statusVersion(message: Buffer): string {
  const reader = new Reader(message);
  let version = "";
  while (reader.next()) {
    if (reader.field === 2 && reader.wireType === LENGTH_DELIMITED) version = reader.bytes().toString("utf8");
    else reader.skip();
  }
  return version;
}
