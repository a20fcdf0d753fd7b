// An etcd v3 gRPC client for tests, independent of the gateway: its wire codec is protobufjs (via
// @grpc/proto-loader) over etcd's own .proto files (test/support/etcd-proto, vendored from etcd
// 3.5), so a test's oracle never shares the gateway's hand-written protobuf codec.
//
// Wire conventions, as tests need them:
// - Field presence is kept. A request field that is set is encoded even when empty, and one that
//   is absent (or `undefined`) is not: etcd reads a present-but-empty `range_end` as "to the end
//   of the keyspace", an absent one as "this key only".
// - Request bytes are Buffer/Uint8Array, or a string taken as UTF-8 (protobufjs alone would read a
//   string as base64). int64/uint64 are decimal strings, numbers or bigints in requests, decimal
//   strings in responses (lease IDs are 63-bit: never a lossy number).
// - Responses read like etcd's Go client sees them: absent scalars are zero, absent messages null,
//   enums by name. A field name a request type does not have is an error, not silently dropped.
// - A failed call rejects with EtcdGrpcError, carrying the gRPC status code and message.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export { status as GrpcStatus } from "@grpc/grpc-js";

// ---------------------------------------------------------------------------------------------
// Message types (request fields optional; response fields as decoded, see above)
// ---------------------------------------------------------------------------------------------

export type Bytes = Buffer | Uint8Array | string;
export type Int64 = string | number | bigint;

export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: string;
  raft_term: string;
}

export interface KeyValue {
  key: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  value: Buffer;
  lease: string;
}

export interface Event {
  type: "PUT" | "DELETE";
  kv: KeyValue | null;
  prev_kv: KeyValue | null;
}

export interface RangeRequest {
  key?: Bytes;
  range_end?: Bytes;
  limit?: Int64;
  revision?: Int64;
  sort_order?: "NONE" | "ASCEND" | "DESCEND";
  sort_target?: "KEY" | "VERSION" | "CREATE" | "MOD" | "VALUE";
  serializable?: boolean;
  keys_only?: boolean;
  count_only?: boolean;
  min_mod_revision?: Int64;
  max_mod_revision?: Int64;
  min_create_revision?: Int64;
  max_create_revision?: Int64;
}

export interface RangeResponse {
  header: ResponseHeader | null;
  kvs: KeyValue[];
  more: boolean;
  count: string;
}

export interface PutRequest {
  key?: Bytes;
  value?: Bytes;
  lease?: Int64;
  prev_kv?: boolean;
  ignore_value?: boolean;
  ignore_lease?: boolean;
}

export interface PutResponse {
  header: ResponseHeader | null;
  prev_kv: KeyValue | null;
}

export interface DeleteRangeRequest {
  key?: Bytes;
  range_end?: Bytes;
  prev_kv?: boolean;
}

export interface DeleteRangeResponse {
  header: ResponseHeader | null;
  deleted: string;
  prev_kvs: KeyValue[];
}

export interface Compare {
  result?: "EQUAL" | "GREATER" | "LESS" | "NOT_EQUAL";
  target?: "VERSION" | "CREATE" | "MOD" | "VALUE" | "LEASE";
  key?: Bytes;
  version?: Int64;
  create_revision?: Int64;
  mod_revision?: Int64;
  value?: Bytes;
  lease?: Int64;
  range_end?: Bytes;
}

export type RequestOp =
  | { request_range: RangeRequest }
  | { request_put: PutRequest }
  | { request_delete_range: DeleteRangeRequest }
  | { request_txn: TxnRequest };

export interface TxnRequest {
  compare?: Compare[];
  success?: RequestOp[];
  failure?: RequestOp[];
}

export interface ResponseOp {
  /** Which member of the oneof is set. */
  response: "response_range" | "response_put" | "response_delete_range" | "response_txn";
  response_range?: RangeResponse;
  response_put?: PutResponse;
  response_delete_range?: DeleteRangeResponse;
  response_txn?: TxnResponse;
}

export interface TxnResponse {
  header: ResponseHeader | null;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface CompactionRequest {
  revision?: Int64;
  physical?: boolean;
}

export interface HeaderOnlyResponse {
  header: ResponseHeader | null;
}

export interface WatchCreateRequest {
  key?: Bytes;
  range_end?: Bytes;
  start_revision?: Int64;
  progress_notify?: boolean;
  filters?: Array<"NOPUT" | "NODELETE">;
  prev_kv?: boolean;
  watch_id?: Int64;
  fragment?: boolean;
}

export type WatchRequest =
  | { create_request: WatchCreateRequest }
  | { cancel_request: { watch_id?: Int64 } }
  | { progress_request: Record<string, never> };

export interface WatchResponse {
  header: ResponseHeader | null;
  watch_id: string;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  fragment: boolean;
  events: Event[];
}

export interface LeaseGrantResponse {
  header: ResponseHeader | null;
  ID: string;
  TTL: string;
  error: string;
}

export interface LeaseKeepAliveResponse {
  header: ResponseHeader | null;
  ID: string;
  TTL: string;
}

export interface LeaseTimeToLiveResponse {
  header: ResponseHeader | null;
  ID: string;
  /** -1 for a lease that does not exist (expired or revoked). */
  TTL: string;
  grantedTTL: string;
  keys: Buffer[];
}

export interface LeaseLeasesResponse {
  header: ResponseHeader | null;
  leases: Array<{ ID: string }>;
}

export type AlarmType = "NONE" | "NOSPACE" | "CORRUPT";

export interface AlarmRequest {
  action?: "GET" | "ACTIVATE" | "DEACTIVATE";
  memberID?: Int64;
  alarm?: AlarmType;
}

export interface AlarmResponse {
  header: ResponseHeader | null;
  alarms: Array<{ memberID: string; alarm: AlarmType }>;
}

export interface StatusResponse {
  header: ResponseHeader | null;
  version: string;
  dbSize: string;
  leader: string;
  raftIndex: string;
  raftTerm: string;
  raftAppliedIndex: string;
  errors: string[];
  dbSizeInUse: string;
  isLearner: boolean;
}

export interface HashResponse {
  header: ResponseHeader | null;
  hash: number;
}

export interface HashKVResponse {
  header: ResponseHeader | null;
  hash: number;
  compact_revision: string;
}

export interface Snapshot {
  /** The first message's header, if any (etcd 3.5.16 sends none: null). */
  header: ResponseHeader | null;
  /** The whole database file. */
  blob: Buffer;
}

export interface Member {
  ID: string;
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  isLearner: boolean;
}

export interface MembersResponse {
  header: ResponseHeader | null;
  members: Member[];
}

export interface MemberAddResponse extends MembersResponse {
  member: Member | null;
}

export interface AuthStatusResponse {
  header: ResponseHeader | null;
  enabled: boolean;
  authRevision: string;
}

export interface AuthUserListResponse {
  header: ResponseHeader | null;
  users: string[];
}

export interface AuthRoleListResponse {
  header: ResponseHeader | null;
  roles: string[];
}

// ---------------------------------------------------------------------------------------------
// Codec: etcd's .proto files through proto-loader
// ---------------------------------------------------------------------------------------------

const PROTO_DIR = fileURLToPath(new URL("./etcd-proto/", import.meta.url));

const definitions = protoLoader.loadSync("etcd/api/etcdserverpb/rpc.proto", {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});

/** The parts of a DescriptorProto (proto-loader's `type`) that request checking reads. */
interface FieldDescriptor {
  name: string;
  label: string;
  type: string;
  typeName: string;
}

function messageType(fullName: string): protoLoader.MessageTypeDefinition<object, object> {
  const definition = definitions[fullName];
  if (definition === undefined || !("format" in definition) || definition.format !== "Protocol Buffer 3 DescriptorProto") {
    throw new TypeError(`${fullName} is not a message type of etcd's protos`);
  }
  return definition as protoLoader.MessageTypeDefinition<object, object>;
}

/** The serialized FileDescriptorProtos this client encodes and decodes with (to check for drift). */
export const fileDescriptorProtos: readonly Buffer[] = messageType("etcdserverpb.ResponseHeader").fileDescriptorProtos;

const methods = new Map<string, protoLoader.MethodDefinition<object, object>>();
for (const definition of Object.values(definitions)) {
  if ("format" in definition) continue;
  for (const method of Object.values(definition as protoLoader.ServiceDefinition)) methods.set(method.path, method);
}

function method(path: string): protoLoader.MethodDefinition<object, object> {
  const found = methods.get(path);
  if (found === undefined) throw new TypeError(`${path} is not a method of etcd's protos (use unary() for raw bytes)`);
  return found;
}

// etcd's message fields name a type of the same package ("ResponseHeader") or a qualified one
// ("mvccpb.KeyValue"); none of etcd's messages nests a message.
function fieldTypeName(owner: string, field: FieldDescriptor): string {
  return field.typeName.includes(".") ? field.typeName : `${owner.slice(0, owner.lastIndexOf("."))}.${field.typeName}`;
}

function toBuffer(value: unknown, where: string): Buffer {
  if (typeof value === "string") return Buffer.from(value, "utf8");
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${where}: bytes must be a Buffer, Uint8Array or UTF-8 string, not ${typeof value}`);
}

/**
 * A request object as protobufjs's fromObject needs it to encode exactly what was written:
 * bytes as Buffers, bigints as strings, unknown field names refused, `undefined` left out.
 */
function prepare(fullName: string, message: unknown, where: string): Record<string, unknown> {
  if (typeof message !== "object" || message === null || Array.isArray(message) || message instanceof Uint8Array) {
    throw new TypeError(`${where}: expected a ${fullName} object`);
  }
  const fields = (messageType(fullName).type as { field: FieldDescriptor[] }).field;
  const prepared: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(message)) {
    const field = fields.find((f) => f.name === name);
    if (field === undefined) throw new TypeError(`${where}.${name}: ${fullName} has no field ${name} (it has ${fields.map((f) => f.name).join(", ")})`);
    if (value === undefined) continue;
    const one = (v: unknown, at: string): unknown => {
      if (field.type === "TYPE_BYTES") return toBuffer(v, at);
      if (field.type === "TYPE_MESSAGE") return prepare(fieldTypeName(fullName, field), v, at);
      return typeof v === "bigint" ? v.toString() : v;
    };
    if (field.label === "LABEL_REPEATED") {
      if (!Array.isArray(value)) throw new TypeError(`${where}.${name}: expected an array`);
      prepared[name] = value.map((v, i) => one(v, `${where}.${name}[${i}]`));
    } else {
      prepared[name] = one(value, `${where}.${name}`);
    }
  }
  return prepared;
}

function requestTypeName(m: protoLoader.MethodDefinition<object, object>): string {
  // Every etcd service is in package etcdserverpb; proto-loader names the type without it.
  return `etcdserverpb.${(m.requestType.type as { name: string }).name}`;
}

/** The bytes this client sends for `request` to method `path` (e.g. "/etcdserverpb.KV/Range"). */
export function encodeRequest(path: string, request: object): Buffer {
  const m = method(path);
  return m.requestSerialize(prepare(requestTypeName(m), request, path));
}

/** A response of method `path`, decoded as the client decodes it. */
export function decodeResponse<T>(path: string, bytes: Buffer): T {
  return method(path).responseDeserialize(bytes) as T;
}

/** Any etcd message by full name (e.g. "etcdserverpb.Compare"), encoded as the client encodes it. */
export function encodeMessage(fullName: string, message: object): Buffer {
  return messageType(fullName).serialize(prepare(fullName, message, fullName));
}

// ---------------------------------------------------------------------------------------------
// Errors and streams
// ---------------------------------------------------------------------------------------------

/** A call that ended with a non-OK gRPC status. */
export class EtcdGrpcError extends Error {
  readonly path: string;
  readonly code: grpc.status;
  /** The server's status message, e.g. "etcdserver: mvcc: required revision has been compacted". */
  readonly details: string;
  readonly metadata: grpc.Metadata;
  constructor(path: string, code: grpc.status, details: string, metadata: grpc.Metadata) {
    super(`${path}: ${grpc.status[code] ?? code} (${code}): ${details}`);
    this.name = "EtcdGrpcError";
    this.path = path;
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

function grpcError(path: string, error: grpc.ServiceError): EtcdGrpcError {
  return new EtcdGrpcError(path, error.code, error.details, error.metadata);
}

/** For tests: the EtcdGrpcError `call` fails with, asserting its gRPC `code`; an answer fails. */
export async function expectGrpcError(call: Promise<unknown>, code: grpc.status): Promise<EtcdGrpcError> {
  const error = await call.then(
    (value) => assert.fail(`expected ${grpc.status[code]}, got an answer: ${JSON.stringify(value)}`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof EtcdGrpcError, `not a gRPC error: ${String(error)}`);
  assert.equal(error.code, code, error.message);
  return error;
}

export interface CallOptions {
  /** Deadline from now. Unary calls default to 10 s, snapshots to 60 s, streams to none. */
  timeoutMs?: number;
  /** Request metadata, e.g. `{ hasleader: "true" }` as etcd's Go client sends on watches. */
  metadata?: Record<string, string>;
}

const UNARY_TIMEOUT_MS = 10_000;
const SNAPSHOT_TIMEOUT_MS = 60_000;
const NEXT_TIMEOUT_MS = 10_000;

interface Waiter<T> {
  resolve(result: IteratorResult<T>): void;
  reject(error: Error): void;
}

/**
 * A bidirectional stream: `send` requests, read responses with `next()`, `for await`, or
 * `onResponse` (each response goes to every listener and is also queued for reading).
 */
export class BidiStream<Req, Res> implements AsyncIterable<Res> {
  private readonly queue: Res[] = [];
  private readonly waiters: Array<Waiter<Res>> = [];
  private readonly listeners: Array<(response: Res) => void> = [];
  /** undefined while open; null once ended with status OK. */
  private ending: EtcdGrpcError | null | undefined;
  /** Settles when the call ends: undefined for status OK, the error otherwise. */
  readonly closed: Promise<EtcdGrpcError | undefined>;

  private readonly call: grpc.ClientDuplexStream<object, Res>;
  private readonly requestType: string;
  readonly path: string;

  constructor(call: grpc.ClientDuplexStream<object, Res>, requestType: string, path: string) {
    this.call = call;
    this.requestType = requestType;
    this.path = path;
    let settle!: (value: EtcdGrpcError | undefined) => void;
    this.closed = new Promise((resolve) => (settle = resolve));
    const finish = (error: EtcdGrpcError | null): void => {
      if (this.ending !== undefined) return;
      this.ending = error;
      settle(error ?? undefined);
      for (const waiter of this.waiters.splice(0)) {
        if (error === null) waiter.resolve({ done: true, value: undefined });
        else waiter.reject(error);
      }
    };
    call.on("data", (response: Res) => {
      for (const listener of this.listeners) listener(response);
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve({ done: false, value: response });
      else this.queue.push(response);
    });
    // grpc-js reports a non-OK status as 'error', and every end as 'status'.
    call.on("error", (error: grpc.ServiceError) => finish(grpcError(path, error)));
    call.on("status", (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) finish(null);
    });
  }

  /** Sends one request; a malformed one throws here, before anything is written. */
  send(request: Req): void {
    this.call.write(prepare(this.requestType, request, this.path));
  }

  onResponse(listener: (response: Res) => void): void {
    this.listeners.push(listener);
  }

  private take(timeoutMs: number): Promise<IteratorResult<Res>> {
    if (this.queue.length > 0) return Promise.resolve({ done: false, value: this.queue.shift()! });
    if (this.ending === null) return Promise.resolve({ done: true, value: undefined });
    if (this.ending !== undefined) return Promise.reject(this.ending);
    return new Promise((resolve, reject) => {
      const waiter: Waiter<Res> = {
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = Number.isFinite(timeoutMs)
        ? setTimeout(() => {
            this.waiters.splice(this.waiters.indexOf(waiter), 1);
            reject(new Error(`${this.path}: no response within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
      this.waiters.push(waiter);
    });
  }

  /** The next response; rejects when none comes within `timeoutMs`, or the stream ends. */
  async next(timeoutMs = NEXT_TIMEOUT_MS): Promise<Res> {
    const result = await this.take(timeoutMs);
    if (result.done) throw new Error(`${this.path}: the stream ended (status OK) with no further response`);
    return result.value;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Res> {
    for (;;) {
      const result = await this.take(Number.POSITIVE_INFINITY);
      if (result.done) return;
      yield result.value;
    }
  }

  /** Half-closes: no more requests; responses keep coming until the server ends the call. */
  end(): void {
    this.call.end();
  }

  /** Cancels the call (the stream then ends with CANCELLED). */
  cancel(): void {
    this.call.cancel();
  }
}

export class WatchStream extends BidiStream<WatchRequest, WatchResponse> {
  create(request: WatchCreateRequest): void {
    this.send({ create_request: request });
  }

  cancelWatch(watchId: Int64): void {
    this.send({ cancel_request: { watch_id: watchId } });
  }

  /** Asks for a progress notification (etcd 3.5.13+ answers with watch_id -1). */
  requestProgress(): void {
    this.send({ progress_request: {} });
  }
}

export class LeaseKeepAliveStream extends BidiStream<{ ID?: Int64 }, LeaseKeepAliveResponse> {
  keepAlive(id: Int64): void {
    this.send({ ID: id });
  }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

export interface ConnectOptions {
  /** PEM of the CA(s) that sign the server's certificate. */
  ca: string | Buffer;
  /** PEM client certificate and key; without them the client presents no certificate. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to verify the server certificate against, when not the endpoint's host. */
  servername?: string;
}

type Unary<Req, Res> = (request: Req, options?: CallOptions) => Promise<Res>;

export interface EtcdClient {
  kv: {
    range: Unary<RangeRequest, RangeResponse>;
    put: Unary<PutRequest, PutResponse>;
    deleteRange: Unary<DeleteRangeRequest, DeleteRangeResponse>;
    txn: Unary<TxnRequest, TxnResponse>;
    compact: Unary<CompactionRequest, HeaderOnlyResponse>;
  };
  /** A new Watch stream (one gRPC call; several watches may share it). */
  watch(options?: CallOptions): WatchStream;
  lease: {
    grant: Unary<{ TTL?: Int64; ID?: Int64 }, LeaseGrantResponse>;
    revoke: Unary<{ ID?: Int64 }, HeaderOnlyResponse>;
    timeToLive: Unary<{ ID?: Int64; keys?: boolean }, LeaseTimeToLiveResponse>;
    leases: Unary<Record<string, never>, LeaseLeasesResponse>;
    keepAlive(options?: CallOptions): LeaseKeepAliveStream;
  };
  maintenance: {
    status: Unary<Record<string, never>, StatusResponse>;
    alarm: Unary<AlarmRequest, AlarmResponse>;
    defragment: Unary<Record<string, never>, HeaderOnlyResponse>;
    hash: Unary<Record<string, never>, HashResponse>;
    hashKV: Unary<{ revision?: Int64 }, HashKVResponse>;
    moveLeader: Unary<{ targetID?: Int64 }, HeaderOnlyResponse>;
    snapshot(options?: CallOptions): Promise<Snapshot>;
  };
  cluster: {
    memberList: Unary<{ linearizable?: boolean }, MembersResponse>;
    memberAdd: Unary<{ peerURLs?: string[]; isLearner?: boolean }, MemberAddResponse>;
    memberRemove: Unary<{ ID?: Int64 }, MembersResponse>;
    memberUpdate: Unary<{ ID?: Int64; peerURLs?: string[] }, MembersResponse>;
    memberPromote: Unary<{ ID?: Int64 }, MembersResponse>;
  };
  auth: {
    authStatus: Unary<Record<string, never>, AuthStatusResponse>;
    userList: Unary<Record<string, never>, AuthUserListResponse>;
    roleList: Unary<Record<string, never>, AuthRoleListResponse>;
  };
  /** Any unary method of etcd's protos by path, e.g. "/etcdserverpb.Auth/UserGet". */
  call<Res = unknown>(path: string, request: object, options?: CallOptions): Promise<Res>;
  /** Any method path with raw request bytes (methods etcd may add later); the raw response. */
  unary(path: string, request: Buffer, options?: CallOptions): Promise<Buffer>;
  /** Cancels open streams and closes the connection. */
  close(): void;
}

/** "https://127.0.0.1:2379" (or "127.0.0.1:2379") → "127.0.0.1:2379". TLS only. */
function target(endpoint: string): string {
  if (!endpoint.includes("://")) return endpoint;
  const url = new URL(endpoint);
  if (url.protocol !== "https:") throw new TypeError(`${endpoint}: this client speaks TLS only (https://)`);
  return url.host;
}

const pem = (value: string | Buffer): Buffer => (typeof value === "string" ? Buffer.from(value) : value);

export function connect(endpoint: string, options: ConnectOptions): EtcdClient {
  if ((options.cert === undefined) !== (options.key === undefined)) throw new TypeError("connect: give both cert and key, or neither");
  const credentials = grpc.credentials.createSsl(pem(options.ca), options.key === undefined ? null : pem(options.key), options.cert === undefined ? null : pem(options.cert));
  const channelOptions: grpc.ChannelOptions = {
    // Each client its own connection: tests compare clients with different credentials.
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_receive_message_length": -1,
    ...(options.servername === undefined ? {} : { "grpc.ssl_target_name_override": options.servername, "grpc.default_authority": options.servername }),
  };
  const client = new grpc.Client(target(endpoint), credentials, channelOptions);
  const open = new Set<grpc.ClientDuplexStream<object, unknown>>();

  const metadataOf = (options?: CallOptions): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(options?.metadata ?? {})) metadata.set(key, value);
    return metadata;
  };
  const deadline = (options: CallOptions | undefined, fallbackMs: number): grpc.CallOptions => {
    const ms = options?.timeoutMs ?? fallbackMs;
    return Number.isFinite(ms) ? { deadline: Date.now() + ms } : {};
  };

  const raw = <Res>(path: string, request: Buffer, serialize: (b: Buffer) => Buffer, deserialize: (b: Buffer) => Res, options?: CallOptions): Promise<Res> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(path, serialize, deserialize, request, metadataOf(options), deadline(options, UNARY_TIMEOUT_MS), (error, response) => {
        if (error) reject(grpcError(path, error));
        else resolve(response as Res);
      });
    });
  const identity = (bytes: Buffer): Buffer => bytes;

  const call = <Res>(path: string, request: object, options?: CallOptions): Promise<Res> => {
    const m = method(path);
    if (m.requestStream || m.responseStream) return Promise.reject(new TypeError(`${path} is a streaming method`));
    // Encoded here, not inside grpc-js: a malformed request throws to the caller as a TypeError.
    const bytes = encodeRequest(path, request);
    return raw(path, bytes, identity, (b) => m.responseDeserialize(b) as Res, options);
  };
  const unary = <Req, Res>(path: string): Unary<Req, Res> => (request, options) => call<Res>(path, request as object, options);

  /** A bidirectional call of `path` and its request type, for a BidiStream; cancelled by close(). */
  const duplex = <Res>(path: string, options?: CallOptions): [grpc.ClientDuplexStream<object, Res>, string, string] => {
    const m = method(path);
    const stream = client.makeBidiStreamRequest(path, m.requestSerialize, m.responseDeserialize as (b: Buffer) => Res, metadataOf(options), deadline(options, Number.POSITIVE_INFINITY));
    open.add(stream);
    stream.on("status", () => open.delete(stream));
    return [stream, requestTypeName(m), path];
  };

  const snapshot = (options?: CallOptions): Promise<Snapshot> =>
    new Promise((resolve, reject) => {
      const path = "/etcdserverpb.Maintenance/Snapshot";
      const m = method(path);
      const stream = client.makeServerStreamRequest(path, m.requestSerialize, m.responseDeserialize, {}, metadataOf(options), deadline(options, SNAPSHOT_TIMEOUT_MS));
      const chunks: Buffer[] = [];
      let header: ResponseHeader | null = null;
      stream.on("data", (response: { header: ResponseHeader | null; blob: Buffer }) => {
        header ??= response.header;
        chunks.push(response.blob);
      });
      stream.on("error", (error: grpc.ServiceError) => reject(grpcError(path, error)));
      stream.on("status", (status: grpc.StatusObject) => {
        if (status.code === grpc.status.OK) resolve({ header, blob: Buffer.concat(chunks) });
      });
    });

  return {
    kv: {
      range: unary("/etcdserverpb.KV/Range"),
      put: unary("/etcdserverpb.KV/Put"),
      deleteRange: unary("/etcdserverpb.KV/DeleteRange"),
      txn: unary("/etcdserverpb.KV/Txn"),
      compact: unary("/etcdserverpb.KV/Compact"),
    },
    watch: (options) => new WatchStream(...duplex<WatchResponse>("/etcdserverpb.Watch/Watch", options)),
    lease: {
      grant: unary("/etcdserverpb.Lease/LeaseGrant"),
      revoke: unary("/etcdserverpb.Lease/LeaseRevoke"),
      timeToLive: unary("/etcdserverpb.Lease/LeaseTimeToLive"),
      leases: unary("/etcdserverpb.Lease/LeaseLeases"),
      keepAlive: (options) => new LeaseKeepAliveStream(...duplex<LeaseKeepAliveResponse>("/etcdserverpb.Lease/LeaseKeepAlive", options)),
    },
    maintenance: {
      status: unary("/etcdserverpb.Maintenance/Status"),
      alarm: unary("/etcdserverpb.Maintenance/Alarm"),
      defragment: unary("/etcdserverpb.Maintenance/Defragment"),
      hash: unary("/etcdserverpb.Maintenance/Hash"),
      hashKV: unary("/etcdserverpb.Maintenance/HashKV"),
      moveLeader: unary("/etcdserverpb.Maintenance/MoveLeader"),
      snapshot,
    },
    cluster: {
      memberList: unary("/etcdserverpb.Cluster/MemberList"),
      memberAdd: unary("/etcdserverpb.Cluster/MemberAdd"),
      memberRemove: unary("/etcdserverpb.Cluster/MemberRemove"),
      memberUpdate: unary("/etcdserverpb.Cluster/MemberUpdate"),
      memberPromote: unary("/etcdserverpb.Cluster/MemberPromote"),
    },
    auth: {
      authStatus: unary("/etcdserverpb.Auth/AuthStatus"),
      userList: unary("/etcdserverpb.Auth/UserList"),
      roleList: unary("/etcdserverpb.Auth/RoleList"),
    },
    call,
    unary: (path, request, options) => raw(path, request, identity, identity, options),
    close: () => {
      for (const stream of open) stream.cancel();
      client.close();
    },
  };
}
