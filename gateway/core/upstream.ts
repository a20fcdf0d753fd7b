// The connection to core etcd: one HTTP/2 session at a time to one of the endpoints (a random one
// first), mutual TLS with the core credentials, and failover to the next endpoint when the session
// dies or cannot be made. New credentials (a renewed client certificate, a rotated CA) apply to
// the next session; the current one is closed gracefully so that calls in flight finish.
import type { EventEmitter } from "node:events";
import { isIP } from "node:net";
import type { Logger } from "../log.ts";
import { GrpcError, MessageDecoder, Status, decodeGrpcMessage } from "../wire/grpc.ts";
import type { H2Session, H2Stream, HeaderFields } from "../wire/h2.ts";
import { callHeaderBlock, connectSession } from "./connect.ts";

/** Headers a call adds to the ones every gRPC call carries (grpc-timeout, hasleader). */
export type CallHeaders = Record<string, string>;

export interface CoreAnswer {
  code: number;
  message: string;
  body?: Buffer;
  /** The call failed before core etcd answered anything: a read may be sent again. */
  unanswered?: boolean;
}

export interface CoreTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

const CONNECT_TIMEOUT_MS = 3_000;
// Pings find a member that froze or was cut off without closing the connection: within 11 s, where
// kube-apiserver's own etcd client takes up to 40 s. Only while calls are open, and no more often
// than etcd's keepalive policy allows (--grpc-keepalive-min-time, 5 s by default; no pings
// without streams): etcd answers more with GOAWAY.
const PING_INTERVAL_MS = 6_000;
const PING_TIMEOUT_MS = 5_000;
// Larger windows than HTTP/2's 64 KiB: a page of 100 objects is bigger than that.
const STREAM_WINDOW = 4 * 1024 * 1024;
const SESSION_WINDOW = 32 * 1024 * 1024;

export class CoreConnection {
  private readonly endpoints: readonly string[];
  private readonly log: Logger;
  private tls: CoreTls;
  /** The endpoint the next dial starts with. */
  private next: number;
  private session: H2Session | undefined;
  private connecting: Promise<H2Session> | undefined;
  private closed = false;
  /** Each session's endpoint, and its host as calls name it (:authority). */
  private readonly endpointOf = new WeakMap<H2Session, { endpoint: string; authority: string }>();

  constructor(endpoints: readonly string[], tls: CoreTls, log: Logger) {
    this.endpoints = endpoints;
    this.tls = tls;
    this.log = log;
    // Each gateway starts at a member of its own, as etcd's clients spread over their endpoints:
    // the core's load is shared, and one member's failure does not take every gateway at once.
    this.next = Math.floor(Math.random() * endpoints.length);
  }

  /** Opens a call on core etcd. Throws GrpcError(UNAVAILABLE) when no endpoint can be reached. */
  async open(path: string, headers: CallHeaders): Promise<H2Stream> {
    // Closed or destroyed before its 'close' event came: retired now, so that this call does not
    // dial the same member again (a frozen one would hold the dial for CONNECT_TIMEOUT_MS).
    if (this.session && !this.usable(this.session)) this.retire(this.session, "closed");
    const session = this.usable(this.session) ? this.session! : await this.connect();
    return session.request(callHeaderBlock(this.endpointOf.get(session)!.authority, path, Object.entries(headers)));
  }

  /**
   * One unary call: resolves with core etcd's status and message (never rejects). `caller`'s
   * 'close' (the tenant went away) cancels it.
   */
  async call(path: string, headers: CallHeaders, framed: Buffer, maxAnswerBytes: number, caller?: EventEmitter): Promise<CoreAnswer> {
    let upstream: H2Stream;
    try {
      upstream = await this.open(path, headers);
    } catch (error) {
      const [code, message] = unreachable(error);
      return { code, message, unanswered: true };
    }
    return new Promise((resolve) => {
      const decoder = answerDecoder(maxAnswerBytes);
      let body: Buffer | undefined;
      let code: number | undefined;
      let statusMessage = "";
      let failure: GrpcError | undefined;
      let answered = false;
      let finished = false;
      // Left on the caller once the answer is complete, a no-op then (the caller's end drops it
      // shortly after): removing it was about 6% of the gateway's CPU per create in a profile.
      const cancel = () => {
        if (!finished) upstream.close();
      };
      caller?.once("close", cancel);
      // The answer is complete once the readable side ended (every DATA frame read, trailers
      // in): waiting for the stream's 'close' as well would keep the tenant waiting longer.
      // Called again by 'close' after 'end': resolving twice is a no-op.
      const finish = () => {
        finished = true;
        if (failure) resolve({ code: failure.code, message: failure.message });
        else if (code === undefined || Number.isNaN(code)) resolve({ code: Status.UNAVAILABLE, message: "etcdstorage gateway: the connection to core etcd was lost before it answered", unanswered: !answered });
        else resolve({ code, message: statusMessage, ...(body ? { body } : {}) });
      };
      upstream.on("response", (responseHeaders: HeaderFields) => {
        answered = true;
        if (responseHeaders["grpc-status"] !== undefined) {
          code = Number(responseHeaders["grpc-status"]);
          statusMessage = decodeGrpcMessage(responseHeaders["grpc-message"]);
          finish();
        }
      });
      upstream.on("data", (chunk: Buffer) => {
        try {
          for (const message of decoder.push(chunk)) body = message;
        } catch (error) {
          failure = error as GrpcError;
          cancel();
        }
      });
      upstream.on("trailers", (trailers: HeaderFields) => {
        code = Number(trailers["grpc-status"]);
        statusMessage = decodeGrpcMessage(trailers["grpc-message"]);
      });
      upstream.on("end", finish);
      upstream.on("close", finish);
      upstream.end(framed);
    });
  }

  /** New credentials: used from the next session on; the current one finishes its calls. */
  reload(tls: CoreTls): void {
    this.tls = tls;
    const old = this.session;
    this.session = undefined;
    if (old && !old.closed) old.close();
  }

  /** Which endpoint the current session talks to (for logs and tests). */
  get endpoint(): string | undefined {
    return this.session && this.usable(this.session) ? this.endpointOf.get(this.session)?.endpoint : undefined;
  }

  close(): void {
    this.closed = true;
    this.session?.close();
  }

  private usable(session: H2Session | undefined): boolean {
    return session !== undefined && session.usable;
  }

  private connect(): Promise<H2Session> {
    this.connecting ??= this.tryEndpoints().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async tryEndpoints(): Promise<H2Session> {
    if (this.closed) throw new GrpcError(Status.UNAVAILABLE, "the gateway is shutting down");
    const failures: string[] = [];
    for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
      const endpoint = this.endpoints[this.next]!;
      try {
        const session = await this.dial(endpoint);
        this.session = session;
        this.log.info({ endpoint }, "connected to core etcd");
        return session;
      } catch (error) {
        failures.push(`${endpoint}: ${(error as Error).message}`);
        this.log.warn({ endpoint, err: (error as Error).message }, "core etcd endpoint unreachable; trying the next");
        this.next = (this.next + 1) % this.endpoints.length;
      }
    }
    throw new GrpcError(Status.UNAVAILABLE, `no core etcd endpoint is reachable (${failures.join("; ")})`);
  }

  private async dial(endpoint: string): Promise<H2Session> {
    const url = new URL(endpoint);
    const { ca, cert, key } = this.tls;
    const options = { host: url.hostname, port: Number(url.port || 443), servername: isIP(url.hostname) ? undefined : url.hostname, ca, cert, key };
    const session = await connectSession(options, { streamWindow: STREAM_WINDOW, sessionWindow: SESSION_WINDOW, peer: "core etcd" }, CONNECT_TIMEOUT_MS);
    this.endpointOf.set(session, { endpoint, authority: url.host });
    this.watchHealth(session);
    return session;
  }

  /** The session failed: the next dial starts with the next endpoint. */
  private retire(session: H2Session, why: string): void {
    if (this.session !== session) return;
    this.session = undefined;
    const endpoint = this.endpointOf.get(session)?.endpoint;
    this.next = (this.endpoints.indexOf(endpoint!) + 1) % this.endpoints.length;
    if (!this.closed) this.log.warn({ endpoint, why }, "core etcd session lost; calls go to the next endpoint");
  }

  private watchHealth(session: H2Session): void {
    const retire = (why: string) => this.retire(session, why);
    session.on("goaway", () => retire("GOAWAY"));
    session.on("close", (error?: Error) => {
      clearInterval(pinger);
      retire(error?.message ?? "closed");
    });
    // Retired first, so that the log says why.
    const fail = (why: string) => {
      retire(why);
      if (!session.destroyed) session.destroy(new Error(why));
    };
    const pinger = setInterval(() => {
      if (session.closed || session.openStreams === 0) return;
      const timeout = setTimeout(() => fail(`no ping answer within ${PING_TIMEOUT_MS} ms`), PING_TIMEOUT_MS);
      session.ping((error) => {
        clearTimeout(timeout);
        if (error) fail(error.message);
      });
    }, PING_INTERVAL_MS);
    pinger.unref();
  }
}

/** Splits core etcd's answers into messages, refusing one larger than the gateway takes. */
export function answerDecoder(maxAnswerBytes: number): MessageDecoder {
  return new MessageDecoder(
    maxAnswerBytes,
    (length, max) => new GrpcError(Status.RESOURCE_EXHAUSTED, `etcdstorage gateway: core etcd's answer of ${length} bytes exceeds the gateway's limit of ${max} bytes; ask for less at a time (limit)`),
  );
}

/** The status for a call that could not reach core etcd. */
export function unreachable(error: unknown): [number, string] {
  if (error instanceof GrpcError) return [error.code, error.message];
  return [Status.UNAVAILABLE, `etcdstorage gateway: core etcd unreachable: ${(error as Error)?.message ?? String(error)}`];
}
