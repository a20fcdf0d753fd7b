// Calls from the tenant to core etcd: each served method translates its requests and answers
// (api/: kv.ts, watch.ts, lease.ts, maintenance.ts); this module carries them. Keyed requests pass
// assertConfined (keys.ts) right before they are sent: nothing outside the prefix leaves.
import type { Logger } from "../log.ts";
import { giveBack } from "../wire/buffers.ts";
import { GrpcError, MessageDecoder, RESPONSE_HEADERS, Status, decodeGrpcMessage, endWithStatus, sendUnary, validTimeout, writeFrame } from "../wire/grpc.ts";
import { assertConfined, OutsidePrefix } from "../keys.ts";
import type { CallContext, Method, StreamMethod, UnaryMethod } from "./method.ts";
import type { Quota, Reservation, Writes } from "../tenant/quota.ts";
import { ReadBudget } from "../tenant/reads.ts";
import { answerDecoder, unreachable, type CallHeaders, type CoreAnswer, type CoreConnection } from "../core/upstream.ts";
import type { H2Stream, HeaderFields } from "../wire/h2.ts";
import { answerRevision } from "../tenant/usage.ts";
import { MalformedMessage } from "../wire/protobuf.ts";

/** What the proxy reports of each call (shell/metrics.ts's GatewayMetrics). */
export interface CallMetrics {
  call(method: string, code: number, seconds: number): void;
  streamOpened(method: string): void;
  streamClosed(method: string): void;
}

const MAX_GRANT_ATTEMPTS = 3;

export class Proxy {
  private readonly methods: ReadonlyMap<string, Method>;
  private readonly ctx: CallContext;
  private readonly core: CoreConnection;
  private readonly metrics: CallMetrics;
  private readonly log: Logger;
  private readonly streams = new Set<() => void>();
  private readonly quota: Quota;
  private readonly reads: ReadBudget;

  constructor(methods: ReadonlyMap<string, Method>, ctx: CallContext, core: CoreConnection, metrics: CallMetrics, log: Logger, quota: Quota) {
    this.methods = methods;
    this.ctx = ctx;
    this.core = core;
    this.metrics = metrics;
    this.log = log;
    this.quota = quota;
    this.reads = new ReadBudget(ctx.limits.maxReadBytesInFlight);
  }

  /** One tenant call, already authenticated. */
  handle(stream: H2Stream, headers: HeaderFields): void {
    const path = String(headers[":path"] ?? "");
    const method = this.methods.get(path);
    const started = performance.now();
    const done = (code: number) => this.metrics.call(method ? path : "unimplemented", code, (performance.now() - started) / 1000);
    if (!method) {
      // The path is shown as sent (printable ASCII only): a tenant sees which method it called.
      const shown = path.replace(/[^\x21-\x7e]/g, "?").slice(0, 200);
      endWithStatus(stream, Status.UNIMPLEMENTED, `etcdstorage gateway: method ${shown} is not served to tenants`);
      done(Status.UNIMPLEMENTED);
      return;
    }
    const forwarded: CallHeaders = {};
    const timeout = validTimeout(headers["grpc-timeout"]);
    if (timeout) forwarded["grpc-timeout"] = timeout;
    // clientv3's WithRequireLeader: etcd then ends watches when its member loses the leader.
    if (headers.hasleader === "true") forwarded.hasleader = "true";
    if (method.kind === "unary") void this.unary(stream, path, method, forwarded).then(done);
    else this.bidirectional(stream, path, method, forwarded, done);
  }

  /** Ends every open stream (watches, keepalives) so that clients move to another replica. */
  endStreams(): void {
    for (const end of [...this.streams]) end();
  }

  private async unary(stream: H2Stream, path: string, method: UnaryMethod<unknown>, headers: CallHeaders): Promise<number> {
    const reply = (code: number, message: string) => {
      endWithStatus(stream, code, message);
      return code;
    };
    let message: Buffer;
    try {
      message = await readSingleMessage(stream, this.requestDecoder());
    } catch (error) {
      return reply(...this.describe(error, "request"));
    }
    try {
      await this.quota.admitCall();
    } catch (error) {
      return reply(...this.describe(error, "request"));
    }
    for (let attempt = 1; ; attempt++) {
      let framed: Buffer;
      let state: unknown;
      let reservation: Reservation | undefined;
      try {
        let writes: Writes | undefined;
        ({ framed, state, writes } = method.request(message, this.ctx));
        if (method.keyed) assertConfined(this.ctx.keyspace, method.keyed, framed, 5);
        if (writes && (writes.puts.length > 0 || writes.txns.length > 0)) reservation = await this.quota.admitWrite(writes);
      } catch (error) {
        return reply(...this.describe(error, "request"));
      }
      // A read whose answer core etcd may build large waits for its share of the bytes in flight.
      const bytes = method.answerBytes?.(framed, this.ctx) ?? 0;
      const leave = bytes > 0 ? await this.reads.enter(bytes) : undefined;
      let answer: CoreAnswer;
      try {
        // The tenant gave up while the call waited for its quota or its turn: what it no longer waits for is not sent.
        if (stream.closed) {
          if (reservation) this.quota.settle(reservation, 0);
          return Status.CANCELLED;
        }
        answer = await this.core.call(path, headers, framed, this.ctx.limits.maxResponseBytes, stream);
      } finally {
        leave?.();
      }
      if (reservation) this.quota.settle(reservation, answer.code === Status.OK && answer.body ? answerRevision(answer.body) : 0);
      if (stream.closed) return Status.CANCELLED;
      if (answer.code !== Status.OK) {
        const again = (method.retry?.(answer.code, answer.message) && attempt < MAX_GRANT_ATTEMPTS) || (answer.unanswered && method.idempotent && attempt === 1);
        if (again) continue;
        return reply(answer.code, answer.message);
      }
      if (!answer.body) return reply(Status.INTERNAL, "etcdstorage gateway: core etcd answered without a message");
      try {
        const framed = method.response(answer.body, this.ctx, state);
        // Translated: nothing refers to core's answer any more (the call's decoder ends with it).
        giveBack(answer.body);
        sendUnary(stream, framed);
        return Status.OK;
      } catch (error) {
        return reply(...this.describe(error, "answer"));
      }
    }
  }

  private bidirectional(stream: H2Stream, path: string, method: StreamMethod, headers: CallHeaders, done: (code: number) => void): void {
    const { maxOpenStreams } = this.ctx.limits;
    if (this.streams.size >= maxOpenStreams) {
      this.ctx.boundReached("open_streams");
      endWithStatus(stream, Status.RESOURCE_EXHAUSTED, `etcdstorage gateway: too many open streams: this gateway replica holds ${maxOpenStreams}, its limit (each one takes core etcd's memory); end streams to open others`);
      done(Status.RESOURCE_EXHAUSTED);
      return;
    }
    let upstream: H2Stream | undefined;
    let finished = false;
    // Sent once core etcd answered the stream, or before an answer of the gateway's own (a refused watch).
    const respond = () => {
      if (!stream.headersSent && !stream.closed) stream.respond(RESPONSE_HEADERS);
    };
    const translator = method.open(this.ctx, (framed) => {
      if (finished) return;
      respond();
      if (!writeFrame(stream, framed) && upstream) {
        const paused = upstream;
        paused.pause();
        stream.once("drain", () => paused.resume());
      }
    });
    const fromTenant = this.requestDecoder();
    const fromCore = answerDecoder(this.ctx.limits.maxResponseBytes);
    let coreStatus: { code: number; message: string } | undefined;
    // Tenant messages in order, then END_OF_REQUESTS once the tenant half-closed.
    const queue: Buffer[] = [];
    // The tenant's side is paused while the request rate holds a message or core etcd's side is full.
    const held = { rate: false, full: false };
    const flow = () => (held.rate || held.full ? stream.pause() : stream.resume());
    let headPaid = false;
    const end = (code: number, message: string) => {
      if (finished) return;
      finished = true;
      translator.close?.();
      this.streams.delete(shutdown);
      this.metrics.streamClosed(path);
      endWithStatus(stream, code, message);
      upstream?.close();
      done(code);
    };
    const shutdown = () => end(Status.UNAVAILABLE, "etcdstorage gateway: shutting down; reconnect to continue");
    this.streams.add(shutdown);
    this.metrics.streamOpened(path);

    // Sends queued messages while core etcd's stream is open and the request rate allows.
    const pump = () => {
      try {
        while (upstream && queue.length > 0 && !finished && !held.full) {
          if (queue[0] === END_OF_REQUESTS) {
            queue.shift();
            upstream.end();
            continue;
          }
          if (!headPaid) {
            headPaid = true;
            const delay = this.quota.streamDelay();
            if (delay > 0) {
              held.rate = true;
              flow();
              setTimeout(() => {
                held.rate = false;
                flow();
                pump();
              }, delay);
              return;
            }
          }
          headPaid = false;
          const out = translator.request(queue.shift()!);
          if (out === undefined) continue;
          if (method.keyed) assertConfined(this.ctx.keyspace, method.keyed, out, 5);
          if (!upstream.write(out)) {
            held.full = true;
            flow();
            upstream.once("drain", () => {
              held.full = false;
              flow();
              pump();
            });
          }
        }
      } catch (error) {
        end(...this.describe(error, "request"));
      }
    };
    stream.on("data", (chunk: Buffer) => {
      // Ended: what the tenant still sends is dropped, never queued (it would be held until the tenant stops).
      if (finished) return;
      try {
        queue.push(...fromTenant.push(chunk));
      } catch (error) {
        end(...this.describe(error, "request"));
        return;
      }
      if (!held.rate) pump();
    });
    stream.on("end", () => {
      queue.push(END_OF_REQUESTS);
      if (!held.rate) pump();
    });
    stream.on("close", () => end(Status.CANCELLED, "the client closed the stream"));

    this.core.open(path, headers).then(
      (opened) => {
        if (finished) {
          opened.close();
          return;
        }
        upstream = opened;
        opened.on("response", (responseHeaders: HeaderFields) => {
          if (responseHeaders["grpc-status"] !== undefined) {
            end(Number(responseHeaders["grpc-status"]), decodeGrpcMessage(responseHeaders["grpc-message"]));
          } else {
            respond();
          }
        });
        opened.on("data", (chunk: Buffer) => {
          try {
            for (const message of fromCore.push(chunk)) translator.response(message);
          } catch (error) {
            end(...this.describe(error, "answer"));
          }
        });
        opened.on("trailers", (trailers: HeaderFields) => {
          coreStatus = { code: Number(trailers["grpc-status"]), message: decodeGrpcMessage(trailers["grpc-message"]) };
        });
        opened.on("close", () => end(coreStatus?.code ?? Status.UNAVAILABLE, coreStatus?.message ?? "etcdstorage gateway: the connection to core etcd was lost; reconnect to continue"));
        if (!held.rate) pump();
      },
      (error: unknown) => end(...unreachable(error)),
    );
  }

  private requestDecoder(): MessageDecoder {
    return new MessageDecoder(this.ctx.limits.maxRequestBytes, (length, max) => new GrpcError(Status.RESOURCE_EXHAUSTED, `etcdstorage gateway: a request message of ${length} bytes exceeds the limit of ${max} bytes`));
  }


  /** A status for an error thrown while translating; what the tenant sent is never quoted. */
  private describe(error: unknown, side: "request" | "answer"): [number, string] {
    if (error instanceof GrpcError) return [error.code, error.message];
    if (side === "request" && error instanceof MalformedMessage) return [Status.INVALID_ARGUMENT, `etcdstorage gateway: malformed request: ${error.message}`];
    // An answer the gateway cannot translate, or a broken invariant: a bug, logged without keys or values.
    this.log.error({ side, err: { type: (error as Error)?.name, message: error instanceof OutsidePrefix || error instanceof MalformedMessage ? error.message : String((error as Error)?.message) } }, "call failed inside the gateway");
    return [Status.INTERNAL, "etcdstorage gateway: internal error; see the gateway's log"];
  }
}

const END_OF_REQUESTS = Buffer.alloc(0);

/** The one message of a unary call. */
function readSingleMessage(stream: H2Stream, decoder: MessageDecoder): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const messages: Buffer[] = [];
    const refusal = (truncated: boolean) => new GrpcError(Status.INVALID_ARGUMENT, `etcdstorage gateway: a unary call carries exactly one message, got ${messages.length}${truncated ? " and a truncated one" : ""}`);
    stream.on("data", (chunk: Buffer) => {
      try {
        messages.push(...decoder.push(chunk));
        // Refused as it arrives: a call that never ends would otherwise be held in memory message by message.
        if (messages.length > 1) throw refusal(false);
      } catch (error) {
        reject(error);
        stream.removeAllListeners("data");
      }
    });
    stream.once("end", () => {
      if (messages.length === 1 && !decoder.hasPartialMessage) resolve(messages[0]!);
      else reject(refusal(decoder.hasPartialMessage));
    });
    // Settled already on a normal end; only a stream closed before its end is a cancel.
    stream.once("close", () => {
      if (!stream.remoteEnded) reject(new GrpcError(Status.CANCELLED, "the client closed the stream"));
    });
  });
}

