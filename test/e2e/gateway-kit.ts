// What the gateway's end-to-end tests share: clients with a tenant's credentials, the host's own
// view of core etcd, raw gRPC over node:http2 for what the test client cannot send (several
// messages in a unary call, a compressed flag, a frame that never ends, a GET), a protobuf encoder
// that shares nothing with the gateway's codec, and the gateway's /metrics read as samples.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { connect, type EtcdClient, type KeyValue } from "../support/etcd-client.ts";
import { httpGet } from "./harness.ts";
import type { RunningTenant } from "./tenant.ts";

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

export interface TenantTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** The API server's credentials of a tenant, as PEM. */
export async function tenantTls(tenant: RunningTenant): Promise<TenantTls> {
  const [ca, cert, key] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
  return { ca: ca!, cert: cert!, key: key! };
}

/**
 * The test client on a tenant's endpoint, as its API server connects: the tenant's CA, and its
 * client certificate unless `identity` says otherwise (another tenant's, or none at all).
 */
export async function tenantClient(tenant: RunningTenant, identity: { cert: Buffer; key: Buffer } | "none" | "own" = "own"): Promise<EtcdClient> {
  const tls = await tenantTls(tenant);
  const presented = identity === "own" ? { cert: tls.cert, key: tls.key } : identity === "none" ? {} : identity;
  // The serving certificate names the Service and localhost, not 127.0.0.1's reverse name.
  return connect(tenant.endpoint, { ca: tls.ca, ...presented, servername: "localhost" });
}

/** Every key of an etcd, with its whole KeyValue ("\0" to "\0": the whole keyspace). */
export async function everyKey(client: EtcdClient): Promise<KeyValue[]> {
  return (await client.kv.range({ key: "\0", range_end: "\0" })).kvs;
}

/** Every core key outside `prefix` (a tenant's, or the root of them all): what no tenant call may change. */
export async function keysOutside(host: EtcdClient, prefix: string): Promise<KeyValue[]> {
  return (await everyKey(host)).filter((kv) => !kv.key.toString("latin1").startsWith(prefix));
}

/** The gateway is the one started at first, still running, and still serves a Put and a Get. */
export async function assertServing(tenant: RunningTenant, pid: number | undefined, client: EtcdClient): Promise<void> {
  assert.equal(tenant.proxy.gateway.process.pid, pid, "the gateway process was not replaced");
  assert.equal(tenant.proxy.gateway.process.exitCode, null, `the gateway exited:\n${tenant.proxy.gateway.logs().slice(-4000)}`);
  const value = `alive ${Date.now()}`;
  await client.kv.put({ key: "/still/serving", value });
  const got = await client.kv.range({ key: "/still/serving" });
  assert.equal(got.kvs[0]?.value.toString(), value);
}

// ---------------------------------------------------------------------------------------------
// Protobuf, written by hand (independent of gateway/wire/protobuf.ts and of protobufjs)
// ---------------------------------------------------------------------------------------------

function varint(value: bigint | number): Buffer {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

/** Fields of a protobuf message: concatenate them (`Buffer.concat`) to make the message. */
export const pb = {
  tag: (field: number, wireType: number) => varint(field * 8 + wireType),
  varint: (field: number, value: bigint | number) => Buffer.concat([varint(field * 8), varint(value)]),
  bytes: (field: number, value: Buffer | string) => {
    const data = typeof value === "string" ? Buffer.from(value) : value;
    return Buffer.concat([varint(field * 8 + 2), varint(data.length), data]);
  },
  /** A length-delimited field that claims `claimed` bytes but holds `value`. */
  lyingBytes: (field: number, claimed: number, value: Buffer) => Buffer.concat([varint(field * 8 + 2), varint(claimed), value]),
};

// ---------------------------------------------------------------------------------------------
// Raw gRPC over node:http2
// ---------------------------------------------------------------------------------------------

/** One gRPC message frame; `compressed` sets the flag byte, `declaredLength` lies about the length. */
export function grpcFrame(message: Buffer, options: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = options.compressed ? 1 : 0;
  head.writeUInt32BE(options.declaredLength ?? message.length, 1);
  return Buffer.concat([head, message]);
}

/** An HTTP/2 session to a tenant's endpoint with its credentials (mutual TLS, ALPN h2). */
export async function rawSession(tenant: RunningTenant): Promise<ClientHttp2Session> {
  const tls = await tenantTls(tenant);
  const session = http2.connect(tenant.endpoint, { ...tls, servername: "localhost" });
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  session.on("error", () => {}); // a test that wants it looks at its calls' outcomes
  return session;
}

export interface RawOutcome {
  /** The HTTP status of the answer (200 for any gRPC answer; 0 when the stream ended without one). */
  httpStatus: number;
  headers: IncomingHttpHeaders;
  /** grpc-status from the trailers or a trailers-only answer; undefined when there was none. */
  grpcStatus?: number;
  grpcMessage?: string;
  /** The answer's messages, without their frame headers. */
  messages: Buffer[];
}

/** One HTTP/2 request; the bytes sent are the caller's, byte for byte. */
export class RawCall {
  readonly stream: ClientHttp2Stream;
  /**
   * Settles once the server has ended the call: with its status (which may come while this side
   * is still sending: a server may answer before reading a request to its end), or when the
   * stream closed without one.
   */
  readonly outcome: Promise<RawOutcome>;
  /** Settles once the stream is closed on both sides, with the RST_STREAM code if one ended it. */
  readonly closed: Promise<number | undefined>;
  private readonly messages: Buffer[] = [];
  private readonly listeners: (() => void)[] = [];

  constructor(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}) {
    this.stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    const result: RawOutcome = { httpStatus: 0, headers: {}, messages: this.messages };
    let settle!: (outcome: RawOutcome) => void;
    this.outcome = new Promise((resolve) => (settle = resolve));
    const status = (h: IncomingHttpHeaders) => {
      if (h["grpc-status"] === undefined) return;
      result.grpcStatus = Number(h["grpc-status"]);
      result.grpcMessage = decodeURIComponent(String(h["grpc-message"] ?? ""));
      settle(result);
    };
    this.stream.on("response", (h, flags) => {
      result.httpStatus = Number(h[":status"]);
      result.headers = h;
      status(h);
      // A non-gRPC answer (415) ends with its headers.
      if (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) settle(result);
    });
    this.stream.on("trailers", status);
    let pending = Buffer.alloc(0);
    this.stream.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        this.messages.push(pending.subarray(5, 5 + pending.readUInt32BE(1)));
        pending = pending.subarray(5 + pending.readUInt32BE(1));
        for (const listener of this.listeners) listener();
      }
    });
    this.stream.on("error", () => {}); // a reset shows as an outcome without a status
    this.closed = new Promise((resolve) => this.stream.once("close", () => resolve(this.stream.rstCode)));
    this.stream.once("close", () => settle(result));
  }

  write(bytes: Buffer): void {
    this.stream.write(bytes);
  }

  end(bytes?: Buffer): void {
    this.stream.end(bytes);
  }

  /** Resolves with the first answer message `matches` accepts, or with undefined once the call ended without one. */
  async message(matches: (message: Buffer) => boolean): Promise<Buffer | undefined> {
    const found = () => this.messages.find(matches);
    return new Promise((resolve) => {
      if (found()) return resolve(found());
      this.listeners.push(() => {
        if (found()) resolve(found());
      });
      void this.outcome.then(() => resolve(found()));
    });
  }

  /** Ends the call from this side (RST_STREAM CANCEL), as a client that gives up does. */
  cancel(): void {
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

/** A whole call: `body` sent and the request ended; resolves with the answer. */
export async function rawCall(session: ClientHttp2Session, path: string, body: Buffer, headers?: OutgoingHttpHeaders): Promise<RawOutcome> {
  const call = new RawCall(session, path, headers);
  call.end(body);
  return call.outcome;
}

/** A bound on how long a promise may take: a failure with `what` instead of a hung test. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------------

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments and blank lines left out). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, name, value] of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[name!] = value!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

export async function scrape(tenant: RunningTenant): Promise<Sample[]> {
  const answer = await httpGet(`http://127.0.0.1:${tenant.proxy.healthPort}/metrics`);
  assert.equal(answer.status, 200, answer.body);
  return parseMetrics(answer.body);
}

/** The value of the one sample with this name and these labels (others may be present); 0 when absent. */
export function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value ?? 0;
}
