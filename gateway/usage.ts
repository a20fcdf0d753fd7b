// What a tenant stores, as every gateway replica sees it: the live bytes of keys and values under
// its prefix (core keys, prefix included: what the shared etcd holds). Counted once at start
// (pages of a Range pinned to one revision), then kept current by a watch on the prefix, so that
// writes through other replicas, lease expiries and the cleanup Job all count. Each key's size is
// kept, so an overwrite counts only what it adds.
//
// How current the view is matters when several replicas admit writes: quota.ts admits growth only
// while every write committed more than CURRENT_WITHIN_MS ago is known to be in the view. That is
// confirmed, ahead of need, by a linearizable read of the most recently modified key among those
// modified after the view's revision: once the watch has delivered that key's event, the view
// holds every live key as it was when the read was sent (a delete it has not seen yet only makes
// the usage look larger). This needs no watch progress requests, which etcd 3.5 may defer
// indefinitely on a watch that started in the past.
import type { ClientHttp2Stream } from "node:http2";
import type { Logger } from "pino";
import { frame, frameWriter } from "./grpc.ts";
import { assertConfined, KEYED_REQUESTS, type TenantKeyspace } from "./keys.ts";
import { answerDecoder, type CoreConnection } from "./upstream.ts";
import { LENGTH_DELIMITED, Reader, VARINT } from "./wire.ts";

const PAGE = 1000;
export const CURRENT_WITHIN_MS = 1_000;
const RETRY_MS = 500;
// How long a confirmation waits for the watch to deliver what the read found.
const CATCH_UP_MS = 1_000;
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

export class TenantUsage {
  /** Live bytes under the prefix, exact as of `revision`. */
  usedBytes = 0;
  revision = 0;
  private readonly sizes = new Map<string, number>();
  private counted = false;
  /** Every write committed before this moment is in the view. */
  private currentAsOf = -Infinity;
  private confirming: Promise<boolean> | undefined;
  private stream: ClientHttp2Stream | undefined;
  private stopped = false;
  private readonly revisionListeners = new Set<(revision: number) => void>();
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

  /** Never rejects: a confirmation started ahead of need has no caller to take a rejection. */
  private async confirm(): Promise<boolean> {
    try {
      const sentAt = this.now();
      const request = this.rangeRequest(this.keyspace.prefix, 0, { limit: 1, keysOnly: true, latestFirst: true, modifiedAfter: this.revision });
      const answer = await this.core.call("/etcdserverpb.KV/Range", {}, request, 64 * 1024);
      if (answer.code !== 0 || !answer.body) return false;
      const page = readRangePage(answer.body);
      if (!(await this.reached(page.modRevisions[0] ?? 0, CATCH_UP_MS))) return false;
      // Every live key modified up to the read's revision is seen; what is not is a delete.
      this.currentAsOf = Math.max(this.currentAsOf, sentAt);
      this.setRevision(page.revision);
      return true;
    } catch (error) {
      this.log.error({ err: (error as Error).message }, "tenant usage: a confirmation failed inside the gateway");
      return false;
    }
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
        recount = await this.watch();
      } catch (error) {
        this.log.warn({ err: (error as Error).message }, "tenant usage: core etcd unreachable; retrying");
      }
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, RETRY_MS).unref());
    }
  }

  /** The whole prefix, in pages of one revision. */
  private async count(): Promise<void> {
    const sizes = new Map<string, number>();
    let used = 0;
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
        sizes.set(key, size);
        used += size;
      }
      if (!page.more || page.lastKey === undefined) break;
      start = Buffer.concat([page.lastKey, Buffer.from([0])]);
    }
    this.sizes.clear();
    for (const [key, size] of sizes) this.sizes.set(key, size);
    this.usedBytes = used;
    this.setRevision(revision);
    this.counted = true;
    this.currentAsOf = sentAt;
    this.log.info({ usedBytes: used, keys: sizes.size, revision }, "tenant usage counted");
  }

  /** A Range from `start` to the end of the prefix. */
  private rangeRequest(start: Buffer, revision: number, options: { limit?: number; keysOnly?: boolean; latestFirst?: boolean; modifiedAfter?: number }): Buffer {
    const writer = frameWriter(start.length + this.keyspace.prefixEnd.length + 32);
    writer.bytesField(1, start);
    writer.bytesField(2, this.keyspace.prefixEnd);
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
              this.apply(answer);
            }
          } catch (error) {
            stream.destroy(error as Error);
          }
        });
        stream.on("error", () => {});
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

/** A key and value's size in core etcd, from a KeyValue's bytes. */
function readKeyValue(buf: Buffer, start: number, end: number): { key: Buffer; size: number; revision: number } {
  const reader = new Reader(buf, start, end);
  let key: Buffer = Buffer.alloc(0);
  let valueBytes = 0;
  let revision = 0;
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) key = reader.bytes();
    else if (reader.field === 5 && reader.wireType === LENGTH_DELIMITED) valueBytes = reader.bytes().length;
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
  events: { deleted: boolean; key: Buffer; size: number; revision: number }[];
}

function readWatchAnswer(message: Buffer): WatchAnswer {
  const reader = new Reader(message);
  const answer: WatchAnswer = { canceled: false, compacted: false, events: [] };
  while (reader.next()) {
    if (reader.field === 4 && reader.wireType === VARINT) answer.canceled = reader.uint() !== 0;
    else if (reader.field === 5 && reader.wireType === VARINT) answer.compacted = reader.uint() !== 0;
    else if (reader.field === 11 && reader.wireType === LENGTH_DELIMITED) {
      const [start, end] = reader.span();
      const event = new Reader(message, start, end);
      let deleted = false;
      let kv: { key: Buffer; size: number; revision: number } = { key: Buffer.alloc(0), size: 0, revision: 0 };
      while (event.next()) {
        if (event.field === 1 && event.wireType === VARINT) deleted = event.uint() === 1;
        else if (event.field === 2 && event.wireType === LENGTH_DELIMITED) kv = readKeyValue(message, ...event.span());
        else event.skip();
      }
      answer.events.push({ deleted, ...kv });
    } else reader.skip();
  }
  return answer;
}
