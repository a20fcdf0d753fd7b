// The gateway's HTTP/2 server side (gateway/wire/h2.ts, role "server", as shell/tenant-server.ts
// runs it for the tenant) against (a) Node's own HTTP/2 client (nghttp2) for what a well-behaved
// peer does: concurrent calls, flow control both ways, a paused stream, a graceful close; and
// (b) frames written by hand on a TLS socket for what a hostile peer does: too many streams, rapid
// reset, CONTINUATION floods, an HPACK bomb, SETTINGS and PING floods, flow-control and protocol
// violations, a bad preface. Each hostile case expects the GOAWAY code RFC 9113 names for it.
import assert from "node:assert/strict";
import fc from "fast-check";
import { once } from "node:events";
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { before, test, type TestContext } from "node:test";
import tls, { type TLSSocket } from "node:tls";
import { H2Session, type H2Stream, type HeaderFields, type SessionOptions } from "../../gateway/wire/h2.ts";
import { HeaderDecoder, encodeHeaders } from "../../gateway/wire/hpack.ts";
import { makeCorePki, type CorePki } from "../support/requests.ts";

let pki: CorePki;
before(async () => {
  pki = await makeCorePki();
});

const STREAM_WINDOW = 65_535;
const SESSION_WINDOW = 1024 * 1024;
const MAX_STREAMS = 10;
/** A failure guard, never a synchronisation: every wait below ends on an event or a frame. */
const GUARD_MS = 5_000;

const T = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8, CONTINUATION: 0x9 } as const;
const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
const E = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, FLOW_CONTROL_ERROR: 0x3, FRAME_SIZE_ERROR: 0x6, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9, ENHANCE_YOUR_CALM: 0xb } as const;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

// ---------------------------------------------------------------------------------------------
// The server under test: H2Session per TLS connection, with an echo handler.

interface TestServer {
  port: number;
  /** Server sessions, in the order connections came. */
  sessions: H2Session[];
  /** Each session's 'close' error (undefined: closed without one), by session. */
  closeErrors: Map<H2Session, Error | undefined>;
  /** The next session to start (resolves at once when one is already there and unclaimed). */
  nextSession(): Promise<H2Session>;
  /** Resolves when the session has emitted `n` 'stream' events in all. */
  streamsSeen(session: H2Session, n: number): Promise<void>;
  /** The session's 'close' error. */
  closed(session: H2Session): Promise<Error | undefined>;
  close(): Promise<void>;
}

type Handler = (stream: H2Stream, fields: HeaderFields, session: H2Session) => void;

/**
 * Answers with the request's body: HEADERS, DATA, trailers `grpc-status: 0`. `x-pause: 1` pauses the
 * stream from the start; `x-answer-bytes: n` answers with n bytes of pattern(n, 9) instead.
 */
const echo: Handler = (stream, fields) => {
  const chunks: Buffer[] = [];
  if (fields["x-pause"] === "1") stream.pause();
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  stream.on("end", () => {
    stream.respond(encodeHeaders([[":status", "200"], ["content-type", "application/grpc"], ["x-path", fields[":path"] ?? ""]]));
    const body = fields["x-answer-bytes"] ? pattern(Number(fields["x-answer-bytes"]), 9) : Buffer.concat(chunks);
    if (body.length > 0) stream.write(body);
    stream.end(undefined, encodeHeaders([["grpc-status", "0"]]));
  });
};

async function startServer(options: Partial<SessionOptions> = {}, handler: Handler = echo): Promise<TestServer> {
  const server = tls.createServer({ key: pki.server.keyPem, cert: pki.server.certPem, ALPNProtocols: ["h2"] });
  const sessions: H2Session[] = [];
  const closeErrors = new Map<H2Session, Error | undefined>();
  const streamCounts = new Map<H2Session, number>();
  let claimed = 0;
  const sessionWaiters: ((session: H2Session) => void)[] = [];
  server.on("secureConnection", (socket: TLSSocket) => {
    socket.setNoDelay(true);
    const session = new H2Session(socket, "server", { streamWindow: STREAM_WINDOW, sessionWindow: SESSION_WINDOW, peer: "the test's client", maxConcurrentStreams: MAX_STREAMS, ...options });
    sessions.push(session);
    streamCounts.set(session, 0);
    session.on("close", (error?: Error) => closeErrors.set(session, error));
    session.on("stream", (stream: H2Stream, fields: HeaderFields) => {
      streamCounts.set(session, streamCounts.get(session)! + 1);
      handler(stream, fields, session);
    });
    socket.on("data", (chunk: Buffer) => session.receive(chunk));
    const waiter = sessionWaiters.shift();
    if (waiter) {
      claimed++;
      waiter(session);
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    port,
    sessions,
    closeErrors,
    nextSession() {
      if (claimed < sessions.length) return Promise.resolve(sessions[claimed++]!);
      return guard(new Promise<H2Session>((resolve) => sessionWaiters.push(resolve)), "a server session");
    },
    streamsSeen(session, n) {
      if (streamCounts.get(session)! >= n) return Promise.resolve();
      return guard(
        new Promise<void>((resolve) => {
          const check = () => {
            if (streamCounts.get(session)! >= n) {
              session.off("stream", check);
              resolve();
            }
          };
          // Registered after the counting listener: it sees the count of this event.
          session.on("stream", check);
        }),
        `${n} streams on the server`,
      );
    },
    closed(session) {
      if (session.destroyed) return Promise.resolve(closeErrors.get(session));
      return guard(new Promise((resolve) => session.once("close", (error?: Error) => resolve(error))), "the server session's close");
    },
    async close() {
      for (const session of sessions) session.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function guard<T>(promise: Promise<T>, what: string, ms = GUARD_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// A peer that writes frames by hand.

interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(id, 5);
  return Buffer.concat([header, payload]);
}

function u32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value, 0);
  return bytes;
}

function requestBlock(path = "/echo", extra: [string, string][] = []): Buffer {
  return encodeHeaders([[":method", "POST"], [":scheme", "https"], [":path", path], [":authority", "127.0.0.1"], ["content-type", "application/grpc"], ["te", "trailers"], ...extra]);
}

function parseGoaway(f: Frame): { lastId: number; code: number; debug: string } {
  return { lastId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString("latin1") };
}

function parseSettings(f: Frame): Map<number, number> {
  const settings = new Map<number, number>();
  for (let at = 0; at + 6 <= f.payload.length; at += 6) settings.set(f.payload.readUInt16BE(at), f.payload.readUInt32BE(at + 2));
  return settings;
}

function describe(f: Frame): string {
  const name = Object.entries(T).find(([, type]) => type === f.type)?.[0] ?? `type ${f.type}`;
  if (f.type === T.GOAWAY) {
    const { lastId, code, debug } = parseGoaway(f);
    return `GOAWAY(last ${lastId}, code ${code}, "${debug}")`;
  }
  if (f.type === T.RST_STREAM) return `RST_STREAM(${f.id}, code ${f.payload.readUInt32BE(0)})`;
  return `${name}(${f.id}, flags ${f.flags}, ${f.payload.length} bytes)`;
}

/** A server and a hand-written client connected to it, both gone when the test ends. */
async function rawPeer(t: TestContext, options: Partial<SessionOptions> = {}, handler: Handler = echo): Promise<{ server: TestServer; peer: RawPeer }> {
  const server = await startServer(options, handler);
  t.after(() => server.close());
  const peer = await RawPeer.connect(server.port);
  t.after(() => peer.destroy());
  return { server, peer };
}

/** A SETTINGS payload that sets INITIAL_WINDOW_SIZE. */
function initialWindowSetting(bytes: number): Buffer {
  const setting = Buffer.alloc(6);
  setting.writeUInt16BE(0x4, 0);
  setting.writeUInt32BE(bytes, 2);
  return setting;
}

class RawPeer {
  readonly socket: TLSSocket;
  readonly frames: Frame[] = [];
  /** Resolves when the socket closed (the server ended or reset it). */
  readonly closed: Promise<void>;
  isClosed = false;
  private buffered: Buffer = Buffer.alloc(0);
  private readonly listeners = new Set<() => void>();

  private constructor(socket: TLSSocket) {
    this.socket = socket;
    socket.on("error", () => {}); // a reset connection is an expected outcome here
    socket.on("data", (chunk: Buffer) => this.parse(chunk));
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.isClosed = true;
        resolve();
        for (const listener of [...this.listeners]) listener();
      }),
    );
  }

  /** Connects, and sends the preface and an empty SETTINGS frame unless `preface` is false. */
  static async connect(port: number, preface = true): Promise<RawPeer> {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: pki.ca.certPem, ALPNProtocols: ["h2"] });
    await guard(once(socket, "secureConnect"), "the TLS handshake");
    assert.equal(socket.alpnProtocol, "h2");
    socket.setNoDelay(true);
    const peer = new RawPeer(socket);
    if (preface) peer.send(PREFACE, frame(T.SETTINGS, 0, 0));
    return peer;
  }

  send(...bytes: Buffer[]): boolean {
    return this.socket.write(bytes.length === 1 ? bytes[0]! : Buffer.concat(bytes));
  }

  private parse(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 9) {
      const length = this.buffered.readUIntBE(0, 3);
      if (this.buffered.length < 9 + length) break;
      this.frames.push({ type: this.buffered[3]!, flags: this.buffered[4]!, id: this.buffered.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(this.buffered.subarray(9, 9 + length)) });
      this.buffered = this.buffered.subarray(9 + length);
    }
    for (const listener of [...this.listeners]) listener();
  }

  /** The first frame (from index `from`) that matches; fails if the socket closes first or the guard runs out. */
  waitFor(what: string, match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    return guard(
      new Promise<Frame>((resolve, reject) => {
        let at = from;
        const check = () => {
          for (; at < this.frames.length; at++) {
            if (match(this.frames[at]!)) {
              this.listeners.delete(check);
              return resolve(this.frames[at]!);
            }
          }
          if (this.isClosed) {
            this.listeners.delete(check);
            reject(new Error(`the connection closed before ${what}; frames: ${this.frames.map(describe).join(", ")}`));
          }
        };
        this.listeners.add(check);
        check();
      }),
      what,
    );
  }

  goaway(): Promise<{ lastId: number; code: number; debug: string }> {
    return this.waitFor("GOAWAY", (f) => f.type === T.GOAWAY).then(parseGoaway);
  }

  /** A PING round trip: everything the server sent before handling it has arrived once it returns. */
  async roundTrip(tag = "roundtrip"): Promise<void> {
    const payload = Buffer.alloc(8);
    payload.write(tag.slice(0, 8), "latin1");
    const from = this.frames.length;
    this.send(frame(T.PING, 0, 0, payload));
    await this.waitFor(`the PING ACK "${tag}"`, (f) => f.type === T.PING && (f.flags & F.ACK) !== 0 && f.payload.equals(payload), from);
  }

  /** The answer to a stream: response fields, body, trailers (waits for END_STREAM). */
  async answer(id: number): Promise<{ response: HeaderFields; body: Buffer; trailers: HeaderFields }> {
    await this.waitFor(`the end of stream ${id}`, (f) => f.id === id && (f.type === T.HEADERS || f.type === T.DATA) && (f.flags & F.END_STREAM) !== 0);
    const decoder = new HeaderDecoder();
    const mine = this.frames.filter((f) => f.id === id);
    // The server encodes without the dynamic table, so blocks decode on their own.
    const blocks = mine.filter((f) => f.type === T.HEADERS).map((f) => decoder.decode(f.payload, 1 << 20));
    assert.ok(!mine.some((f) => f.type === T.CONTINUATION), "small blocks come in one frame");
    return { response: blocks[0]!, body: Buffer.concat(mine.filter((f) => f.type === T.DATA).map((f) => f.payload)), trailers: blocks[1]! };
  }

  rstCodes(): Map<number, number> {
    return new Map(this.frames.filter((f) => f.type === T.RST_STREAM).map((f) => [f.id, f.payload.readUInt32BE(0)]));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Node's client.

function nodeClient(port: number): Promise<ClientHttp2Session> {
  const client = http2.connect(`https://127.0.0.1:${port}`, { ca: pki.ca.certPem });
  client.on("error", () => {});
  return guard(once(client, "connect").then(() => client), "node's client to connect");
}

interface NodeOutcome {
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | undefined;
}

function nodeCall(client: ClientHttp2Session, path: string, body: Buffer | undefined, extra: http2.OutgoingHttpHeaders = {}): { stream: ClientHttp2Stream; outcome: Promise<NodeOutcome> } {
  const stream = client.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...extra }, { endStream: body === undefined });
  const outcome = new Promise<NodeOutcome>((resolve, reject) => {
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => (stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? resolve({ headers, body: Buffer.concat(chunks), trailers }) : reject(new Error(`stream reset with ${stream.rstCode}`))));
  });
  if (body !== undefined) stream.end(body);
  return { stream, outcome: guard(outcome, `the answer to ${path}`) };
}

function pattern(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

function nodePing(client: ClientHttp2Session): Promise<void> {
  return guard(
    new Promise((resolve, reject) => {
      client.ping((error) => (error ? reject(error) : resolve()));
    }),
    "a PING answer",
  );
}

// ---------------------------------------------------------------------------------------------
// Well-behaved peers: Node's client.

test("node's client: concurrent calls small and 3 MiB both ways, and one without a body, arrive intact with headers and trailers", async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const client = await nodeClient(server.port);
  t.after(() => client.destroy());
  const bodies = [pattern(10, 1), pattern(3 * 1024 * 1024, 2), pattern(1000, 3), pattern(3 * 1024 * 1024, 4), pattern(16_385, 5)];
  const calls = bodies.map((body, n) => nodeCall(client, `/call/${n}`, body));
  const empty = nodeCall(client, "/empty", undefined);
  const outcomes = await Promise.all(calls.map((call) => call.outcome));
  outcomes.forEach(({ headers, body, trailers }, n) => {
    assert.equal(headers[":status"], 200, `call ${n}`);
    assert.equal(headers["content-type"], "application/grpc");
    assert.equal(headers["x-path"], `/call/${n}`);
    assert.equal(body.length, bodies[n]!.length, `call ${n}'s length`);
    assert.ok(body.equals(bodies[n]!), `call ${n}'s body`);
    assert.equal(trailers?.["grpc-status"], "0", `call ${n}'s trailers`);
  });
  const { headers, body, trailers } = await empty.outcome;
  assert.equal(headers[":status"], 200);
  assert.equal(headers["x-path"], "/empty");
  assert.equal(body.length, 0);
  assert.equal(trailers?.["grpc-status"], "0");
  // All on one connection, and every stream it opened is gone again.
  assert.equal(server.sessions.length, 1);
  assert.equal(server.sessions[0]!.openStreams, 0);
});

test("a stream the server paused gets no more than its window until resume(); other calls go on meanwhile", async (t) => {
  let pausedStream: H2Stream | undefined;
  let received = 0;
  let mostWhilePaused = 0;
  let filled: () => void;
  const windowFilled = new Promise<void>((resolve) => (filled = resolve));
  const server = await startServer({}, (stream, fields, session) => {
    if (fields[":path"] !== "/paused") return echo(stream, fields, session);
    pausedStream = stream;
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => {
      // Paused at its first bytes, from within their 'data' event: nothing of the window was given back.
      if (received === 0) stream.pause();
      received += chunk.length;
      chunks.push(chunk);
      if (stream.paused) mostWhilePaused = Math.max(mostWhilePaused, received);
      if (received === STREAM_WINDOW) filled();
    });
    stream.on("end", () => {
      stream.respond(encodeHeaders([[":status", "200"], ["content-type", "application/grpc"]]));
      stream.end(Buffer.concat(chunks), encodeHeaders([["grpc-status", "0"]]));
    });
  });
  t.after(() => server.close());
  const client = await nodeClient(server.port);
  t.after(() => client.destroy());
  const big = pattern(3 * 1024 * 1024, 7);
  const paused = nodeCall(client, "/paused", big);
  await guard(windowFilled, "the paused stream's window to fill");
  // Another call completes in full while the first holds its window (the connection's is larger).
  const other = await nodeCall(client, "/other", pattern(300_000, 8)).outcome;
  assert.ok(other.body.equals(pattern(300_000, 8)));
  // Three PING round trips: a WINDOW_UPDATE wrongly sent would have let more DATA in by now.
  for (let i = 0; i < 3; i++) await nodePing(client);
  assert.equal(received, STREAM_WINDOW, "bytes received while paused");
  assert.ok(mostWhilePaused <= STREAM_WINDOW, `${mostWhilePaused} bytes arrived while paused, above the ${STREAM_WINDOW} window`);
  pausedStream!.resume();
  const { body, trailers } = await paused.outcome;
  assert.equal(received, big.length);
  assert.ok(body.equals(big));
  assert.equal(trailers?.["grpc-status"], "0");
});

test("graceful close: GOAWAY NO_ERROR names the last stream opened, calls in flight complete, a new one is refused, then the connection ends", async (t) => {
  const { server, peer } = await rawPeer(t);
  const session = await server.nextSession();
  peer.send(frame(T.HEADERS, F.END_HEADERS, 1, requestBlock("/one")), frame(T.DATA, 0, 1, Buffer.from("one")), frame(T.HEADERS, F.END_HEADERS, 3, requestBlock("/three")));
  await server.streamsSeen(session, 2);
  session.close();
  const goaway = await peer.goaway();
  assert.deepEqual({ lastId: goaway.lastId, code: goaway.code }, { lastId: 3, code: E.NO_ERROR });
  assert.equal(peer.isClosed, false, "the connection stays while calls are in flight");
  // A stream opened after GOAWAY is refused; the two in flight are answered.
  peer.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 5, requestBlock("/late")));
  await peer.waitFor("RST_STREAM on stream 5", (f) => f.type === T.RST_STREAM && f.id === 5);
  assert.equal(peer.rstCodes().get(5), E.REFUSED_STREAM);
  peer.send(frame(T.DATA, F.END_STREAM, 1, Buffer.from("-end")));
  const one = await peer.answer(1);
  assert.equal(one.response[":status"], "200");
  assert.equal(one.body.toString(), "one-end");
  assert.deepEqual(one.trailers, { "grpc-status": "0" });
  assert.equal(peer.isClosed, false, "stream 3 is still in flight");
  peer.send(frame(T.DATA, F.END_STREAM, 3, Buffer.from("three")));
  const three = await peer.answer(3);
  assert.equal(three.body.toString(), "three");
  assert.deepEqual(three.trailers, { "grpc-status": "0" });
  await guard(peer.closed, "the connection to end after its last call");
  assert.equal(peer.frames.filter((f) => f.type === T.GOAWAY).length, 1, "one GOAWAY");
});

test("the server keeps to the peer's stream window (its INITIAL_WINDOW_SIZE) and frame size, and sends the rest on WINDOW_UPDATE", async (t) => {
  const { peer } = await rawPeer(t);
  const setting = initialWindowSetting(1_000);
  // Streams get 1000 bytes; the connection 10 MB more than its 65535: only the stream's window holds the answer.
  peer.send(frame(T.SETTINGS, 0, 0, setting), frame(T.WINDOW_UPDATE, 0, 0, u32(10_000_000)), frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, requestBlock("/big", [["x-answer-bytes", "100000"]])));
  await peer.waitFor("the first DATA", (f) => f.type === T.DATA && f.id === 1);
  await peer.roundTrip("window");
  const dataBytes = () => peer.frames.filter((f) => f.type === T.DATA && f.id === 1).reduce((sum, f) => sum + f.payload.length, 0);
  assert.equal(dataBytes(), 1_000, "DATA within the stream's window of 1000");
  peer.send(frame(T.WINDOW_UPDATE, 0, 1, u32(99_000)));
  const { response, body, trailers } = await peer.answer(1);
  assert.equal(response[":status"], "200");
  assert.ok(body.equals(pattern(100_000, 9)));
  assert.deepEqual(trailers, { "grpc-status": "0" });
  assert.ok(peer.frames.every((f) => f.payload.length <= 16_384), "no frame above the default MAX_FRAME_SIZE");
  assert.ok(peer.frames.some((f) => f.type === T.SETTINGS && f.flags & F.ACK), "the peer's SETTINGS acknowledged");
});

// ---------------------------------------------------------------------------------------------
// Bounds on what a peer may open and repeat.

test("MAX_CONCURRENT_STREAMS is announced; a stream past it is refused with REFUSED_STREAM, the others are served", async (t) => {
  const { peer } = await rawPeer(t);
  const settings = parseSettings(await peer.waitFor("the server's SETTINGS", (f) => f.type === T.SETTINGS && (f.flags & F.ACK) === 0));
  assert.equal(settings.get(0x3), MAX_STREAMS, "MAX_CONCURRENT_STREAMS");
  assert.equal(settings.get(0x4), STREAM_WINDOW, "INITIAL_WINDOW_SIZE");
  const ids = Array.from({ length: MAX_STREAMS + 1 }, (_, i) => 2 * i + 1);
  peer.send(...ids.map((id) => frame(T.HEADERS, F.END_HEADERS, id, requestBlock(`/s${id}`))));
  const refused = ids.at(-1)!;
  await peer.waitFor(`RST_STREAM on stream ${refused}`, (f) => f.type === T.RST_STREAM && f.id === refused);
  assert.deepEqual([...peer.rstCodes()], [[refused, E.REFUSED_STREAM]]);
  peer.send(...ids.slice(0, -1).map((id) => frame(T.DATA, F.END_STREAM, id, Buffer.from(`body ${id}`))));
  for (const id of ids.slice(0, -1)) {
    const { response, body, trailers } = await peer.answer(id);
    assert.equal(response[":status"], "200");
    assert.equal(response["x-path"], `/s${id}`);
    assert.equal(body.toString(), `body ${id}`);
    assert.deepEqual(trailers, { "grpc-status": "0" });
  }
  // With those done there is room again.
  const next = refused + 2;
  peer.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, next, requestBlock("/again")));
  assert.equal((await peer.answer(next)).response[":status"], "200");
  assert.equal(peer.rstCodes().size, 1);
});

test("rapid reset (CVE-2023-44487): far more HEADERS+RST_STREAM pairs than the burst end in GOAWAY ENHANCE_YOUR_CALM", async (t) => {
  const { peer } = await rawPeer(t);
  const pairs: Buffer[] = [];
  for (let i = 0; i < 1_500; i++) pairs.push(frame(T.HEADERS, F.END_HEADERS, 2 * i + 1, requestBlock()), frame(T.RST_STREAM, 0, 2 * i + 1, u32(E.CANCEL)));
  peer.send(...pairs);
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.ENHANCE_YOUR_CALM, goaway.debug);
  assert.match(goaway.debug, /reset/);
  assert.ok(goaway.lastId > 2_000 && goaway.lastId < 3_000, `last stream ${goaway.lastId}: cut off a little past the burst of 1000`);
  await guard(peer.closed, "the connection to close");
});

test("MadeYouReset (CVE-2025-8671): streams the peer makes the server reset (WINDOW_UPDATE of 0) are bounded like its own resets", async (t) => {
  // nghttp2 (Node's server) answers a stream WINDOW_UPDATE of 0 with GOAWAY PROTOCOL_ERROR at once;
  // counting such resets in the rapid-reset bucket (GOAWAY ENHANCE_YOUR_CALM past the burst) bounds them too.
  let opened = 0;
  const server = await startServer({}, (stream, fields, session) => {
    opened++;
    echo(stream, fields, session);
  });
  t.after(() => server.close());
  const peer = await RawPeer.connect(server.port);
  t.after(() => peer.destroy());
  const pairs: Buffer[] = [];
  for (let i = 0; i < 1_500; i++) pairs.push(frame(T.HEADERS, F.END_HEADERS, 2 * i + 1, requestBlock()), frame(T.WINDOW_UPDATE, 0, 2 * i + 1, u32(0)));
  // Then a PING: its answer, if no GOAWAY came first, shows the server took every pair.
  peer.send(...pairs, frame(T.PING, 0, 0, Buffer.from("afterall", "latin1")));
  await peer.waitFor("GOAWAY or the PING ACK", (f) => f.type === T.GOAWAY || (f.type === T.PING && (f.flags & F.ACK) !== 0));
  const goaway = peer.frames.find((f) => f.type === T.GOAWAY);
  const resets = peer.frames.filter((f) => f.type === T.RST_STREAM).length;
  assert.ok(goaway, `no GOAWAY: the server reset ${resets} streams for the peer (none counted against the reset bound of 1000), and ${opened} calls reached its handler`);
  assert.ok([E.PROTOCOL_ERROR, E.ENHANCE_YOUR_CALM].includes(parseGoaway(goaway).code as 0x1 | 0xb), describe(goaway));
  assert.ok(opened <= 1_100, `${opened} calls reached the handler`);
});

test("streams refused past MAX_CONCURRENT_STREAMS count as resets: a peer that keeps opening them gets GOAWAY ENHANCE_YOUR_CALM", async (t) => {
  const { peer } = await rawPeer(t);
  // MAX_STREAMS held open (no END_STREAM), then 1500 more, each refused.
  const frames: Buffer[] = [];
  for (let i = 0; i < MAX_STREAMS + 1_500; i++) frames.push(frame(T.HEADERS, F.END_HEADERS, 2 * i + 1, requestBlock()));
  peer.send(...frames);
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.ENHANCE_YOUR_CALM, goaway.debug);
  assert.match(goaway.debug, /reset/);
  assert.ok(peer.rstCodes().size >= 1_000, `${peer.rstCodes().size} streams refused before the GOAWAY: the burst is 1000`);
  await guard(peer.closed, "the connection to close");
});

test("rapid reset: 100 pairs, fewer than the burst, leave the connection serving", async (t) => {
  const { server, peer } = await rawPeer(t);
  const pairs: Buffer[] = [];
  for (let i = 0; i < 100; i++) pairs.push(frame(T.HEADERS, F.END_HEADERS, 2 * i + 1, requestBlock()), frame(T.RST_STREAM, 0, 2 * i + 1, u32(E.CANCEL)));
  peer.send(...pairs, frame(T.HEADERS, F.END_HEADERS, 201, requestBlock("/after")), frame(T.DATA, F.END_STREAM, 201, Buffer.from("still here")));
  const { response, body, trailers } = await peer.answer(201);
  assert.equal(response["x-path"], "/after");
  assert.equal(body.toString(), "still here");
  assert.deepEqual(trailers, { "grpc-status": "0" });
  assert.ok(!peer.frames.some((f) => f.type === T.GOAWAY), "no GOAWAY");
  assert.equal(server.sessions[0]!.destroyed, false);
});

test("CONTINUATION flood: a header block past 64 KiB ends in GOAWAY ENHANCE_YOUR_CALM", async (t) => {
  const { server, peer } = await rawPeer(t);
  // A literal whose value never ends: 16 KiB frames of it, END_HEADERS never set.
  const filler = Buffer.alloc(16_384, 0x61);
  const frames = [frame(T.HEADERS, 0, 1, filler)];
  for (let i = 0; i < 10; i++) frames.push(frame(T.CONTINUATION, 0, 1, filler));
  peer.send(...frames);
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.ENHANCE_YOUR_CALM, goaway.debug);
  assert.match(goaway.debug, /65536 bytes/);
  await guard(peer.closed, "the connection to close");
  assert.equal(server.sessions[0]!.openStreams, 0);
});

test("CONTINUATION flood: more than 32 empty CONTINUATION frames end in GOAWAY ENHANCE_YOUR_CALM", async (t) => {
  const { peer } = await rawPeer(t);
  const frames = [frame(T.HEADERS, 0, 1, requestBlock())];
  for (let i = 0; i < 40; i++) frames.push(frame(T.CONTINUATION, 0, 1));
  peer.send(...frames);
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.ENHANCE_YOUR_CALM, goaway.debug);
  assert.match(goaway.debug, /32 frames/);
  await guard(peer.closed, "the connection to close");
});

test("a header block in a few CONTINUATION frames, within the bounds, is taken", async (t) => {
  const { peer } = await rawPeer(t);
  const block = requestBlock("/continued", [["x-long", "v".repeat(20_000)]]);
  peer.send(frame(T.HEADERS, 0, 1, block.subarray(0, 10_000)), frame(T.CONTINUATION, 0, 1, block.subarray(10_000, 10_010)), frame(T.CONTINUATION, F.END_HEADERS, 1, block.subarray(10_010)), frame(T.DATA, F.END_STREAM, 1, Buffer.from("x")));
  const { response, body } = await peer.answer(1);
  assert.equal(response["x-path"], "/continued");
  assert.equal(body.toString(), "x");
});

test("HPACK bomb: one 4000-byte table entry named 100 times ends in GOAWAY COMPRESSION_ERROR about the header list size", async (t) => {
  const { server, peer } = await rawPeer(t);
  const value = Buffer.alloc(4_000, 0x62);
  const name = Buffer.from("x-bomb", "latin1");
  // Literal with incremental indexing, new name (0x40), value length 4000 (7-bit prefix: 127, then 3873 = 0xa1 0x1e).
  const insert = Buffer.concat([Buffer.from([0x40, name.length]), name, Buffer.from([0x7f, 0xa1, 0x1e]), value]);
  const references = Buffer.alloc(100, 0x80 | 62); // indexed field 62: the dynamic table's newest entry
  const block = Buffer.concat([requestBlock("/bomb"), insert, references]);
  assert.ok(block.length < 16_384);
  peer.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, block));
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.COMPRESSION_ERROR, goaway.debug);
  assert.match(goaway.debug, /header list of more than 65536 bytes/);
  await guard(peer.closed, "the connection to close");
  assert.equal(server.sessions[0]!.openStreams, 0, "no stream was opened for it");
});

test("SETTINGS flood: 200 SETTINGS frames at once end in GOAWAY ENHANCE_YOUR_CALM", async (t) => {
  const { peer } = await rawPeer(t);
  const setting = initialWindowSetting(100_000);
  peer.send(...Array.from({ length: 200 }, () => frame(T.SETTINGS, 0, 0, setting)));
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.ENHANCE_YOUR_CALM, goaway.debug);
  assert.match(goaway.debug, /SETTINGS/);
  await guard(peer.closed, "the connection to close");
  // Each SETTINGS taken was acknowledged: about the burst of 100, not 200.
  const acks = peer.frames.filter((f) => f.type === T.SETTINGS && f.flags & F.ACK).length;
  assert.ok(acks >= 90 && acks <= 110, `${acks} SETTINGS acknowledged`);
});

// ---------------------------------------------------------------------------------------------
// Flow control.

test("flow control: DATA up to the stream window is taken, one byte beyond it ends in GOAWAY FLOW_CONTROL_ERROR", async (t) => {
  const { peer } = await rawPeer(t);
  // The handler pauses the stream: the server gives none of its window back.
  peer.send(frame(T.HEADERS, F.END_HEADERS, 1, requestBlock("/held", [["x-pause", "1"]])));
  const full = [16_384, 16_384, 16_384, 16_383];
  assert.equal(full.reduce((a, b) => a + b), STREAM_WINDOW);
  peer.send(...full.map((size) => frame(T.DATA, 0, 1, Buffer.alloc(size))));
  await peer.roundTrip("inwindow");
  assert.ok(!peer.frames.some((f) => f.type === T.GOAWAY), "exactly the window is allowed");
  assert.ok(!peer.frames.some((f) => f.type === T.WINDOW_UPDATE && f.id === 1), "no window given back for a paused stream");
  peer.send(frame(T.DATA, 0, 1, Buffer.alloc(1)));
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.FLOW_CONTROL_ERROR, goaway.debug);
  assert.match(goaway.debug, /stream 1's window/);
  await guard(peer.closed, "the connection to close");
});

test("flow control: WINDOW_UPDATE past 2^31-1 on the connection ends in GOAWAY FLOW_CONTROL_ERROR", async (t) => {
  const { peer } = await rawPeer(t);
  peer.send(frame(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1)), frame(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1)));
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.FLOW_CONTROL_ERROR, goaway.debug);
  await guard(peer.closed, "the connection to close");
});

test("flow control: DATA beyond the connection window (more than the streams' windows together) ends in GOAWAY FLOW_CONTROL_ERROR", async (t) => {
  // A session window smaller than what the paused streams could take: the connection's bound holds.
  const { peer } = await rawPeer(t, { sessionWindow: 100_000 });
  peer.send(frame(T.HEADERS, F.END_HEADERS, 1, requestBlock("/held", [["x-pause", "1"]])), frame(T.HEADERS, F.END_HEADERS, 3, requestBlock("/held", [["x-pause", "1"]])));
  const frames: Buffer[] = [];
  for (const id of [1, 3]) for (let i = 0; i < 3; i++) frames.push(frame(T.DATA, 0, id, Buffer.alloc(16_384)));
  // 6 x 16384 = 98304: within the 100000 connection window.
  peer.send(...frames);
  await peer.roundTrip("inwindow");
  assert.ok(!peer.frames.some((f) => f.type === T.GOAWAY));
  peer.send(frame(T.DATA, 0, 1, Buffer.alloc(16_383)));
  const goaway = await peer.goaway();
  assert.equal(goaway.code, E.FLOW_CONTROL_ERROR, goaway.debug);
  assert.match(goaway.debug, /connection's window/);
});

// ---------------------------------------------------------------------------------------------
// Protocol errors.

test("a connection that does not start with the preface (HTTP/1.1) is closed", async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const peer = await RawPeer.connect(server.port, false);
  t.after(() => peer.destroy());
  peer.send(Buffer.from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "latin1"));
  await guard(peer.closed, "the connection to close");
  const goaway = peer.frames.find((f) => f.type === T.GOAWAY);
  if (goaway) assert.equal(parseGoaway(goaway).code, E.PROTOCOL_ERROR);
  const error = await server.closed(server.sessions[0]!);
  assert.match(String(error?.message), /preface/);
});

for (const { name, frames, code, debug } of [
  { name: "DATA on a stream never opened", frames: () => [frame(T.DATA, 0, 1, Buffer.from("x"))], code: E.PROTOCOL_ERROR, debug: /not open/ },
  { name: "HEADERS on an even stream id", frames: () => [frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 2, requestBlock())], code: E.PROTOCOL_ERROR, debug: /odd/ },
  { name: "a frame of 16385 bytes", frames: () => [frame(T.HEADERS, F.END_HEADERS, 1, Buffer.concat([requestBlock(), Buffer.alloc(16_385 - requestBlock().length)]))], code: E.FRAME_SIZE_ERROR, debug: /16385 bytes/ },
  { name: "RST_STREAM on a stream never opened", frames: () => [frame(T.RST_STREAM, 0, 7, u32(E.CANCEL))], code: E.PROTOCOL_ERROR, debug: /not open/ },
  { name: "a frame other than CONTINUATION inside a header block", frames: () => [frame(T.HEADERS, 0, 1, requestBlock()), frame(T.PING, 0, 0, Buffer.alloc(8))], code: E.PROTOCOL_ERROR, debug: /interrupted/ },
  { name: "PUSH_PROMISE from a client", frames: () => [frame(0x5, F.END_HEADERS, 1, Buffer.alloc(4))], code: E.PROTOCOL_ERROR, debug: /PUSH_PROMISE/ },
]) {
  test(`protocol error: ${name} ends in GOAWAY ${code === E.PROTOCOL_ERROR ? "PROTOCOL_ERROR" : "FRAME_SIZE_ERROR"}`, async (t) => {
    const server = await startServer();
    t.after(() => server.close());
    const peer = await RawPeer.connect(server.port);
    t.after(() => peer.destroy());
    peer.send(...frames());
    const goaway = await peer.goaway();
    assert.equal(goaway.code, code, goaway.debug);
    assert.match(goaway.debug, debug);
    await guard(peer.closed, "the connection to close");
    assert.match(String((await server.closed(server.sessions[0]!))?.message), /HTTP\/2 protocol error from the test's client/);
  });
}

// ---------------------------------------------------------------------------------------------
// PING.

test("PING is answered with ACK and the same payload; a PING ACK from the peer is not answered", async (t) => {
  const { peer } = await rawPeer(t);
  const payload = Buffer.from("8 bytes!", "latin1");
  peer.send(frame(T.PING, F.ACK, 0, Buffer.from("unasked!", "latin1")), frame(T.PING, 0, 0, payload));
  const answer = await peer.waitFor("the PING ACK", (f) => f.type === T.PING);
  assert.equal(answer.flags & F.ACK, F.ACK);
  assert.equal(answer.id, 0);
  assert.ok(answer.payload.equals(payload), `payload ${answer.payload.toString("latin1")}`);
  await peer.roundTrip("second");
  assert.equal(peer.frames.filter((f) => f.type === T.PING).length, 2, "only the two PINGs asked for are answered");
  // A burst of 500 from a peer that reads: every one answered, in order, the connection kept.
  const payloads = Array.from({ length: 500 }, (_, i) => Buffer.from(`burst${String(i).padStart(3, "0")}`, "latin1"));
  peer.send(...payloads.map((p) => frame(T.PING, 0, 0, p)));
  await peer.roundTrip("last");
  const answers = peer.frames.filter((f) => f.type === T.PING).slice(2, -1);
  assert.deepEqual(answers.map((f) => f.payload.toString("latin1")), payloads.map((p) => p.toString("latin1")));
  assert.ok(!peer.frames.some((f) => f.type === T.GOAWAY));
});

test("a peer that sends PINGs and never reads their answers is cut off", async (t) => {
  const { server, peer } = await rawPeer(t);
  const session = await server.nextSession();
  const closed = server.closed(session);
  let done = false;
  void closed.then(() => (done = true));
  // The peer reads nothing: the kernel's buffers fill with ACKs, then the server's socket is full.
  peer.socket.pause();
  const batch = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => frame(T.PING, 0, 0, Buffer.from(String(i).padStart(8, "0")))));
  let sent = 0;
  // Batches while the server takes them, until it cut the peer off (or a bound of 2 M PINGs, 34 MB of ACKs).
  while (!done && !peer.isClosed && sent < 2_000_000) {
    sent += 20_000;
    if (!peer.send(batch)) await Promise.race([once(peer.socket, "drain"), closed, peer.closed]);
  }
  const error = await closed;
  assert.match(String(error?.message), /acknowledgements unread|bytes unread/, `after ${sent} PINGs`);
  peer.socket.resume();
  await guard(peer.closed, "the peer's connection to close");
});

// ---------------------------------------------------------------------------------------------
// Fuzzing: whatever frames a peer sends, the server either serves on or ends the connection for a
// protocol error of the peer's. A bug of the server's own (a TypeError, a RangeError) also ends
// the connection rather than the process (h2.ts catches it), so only this test would see it.

const FUZZ_SEED = 20261202;
const FUZZ_RUNS = 300;

test(`fuzzed frames (fast-check, seed ${FUZZ_SEED}, ${FUZZ_RUNS} cases): the server ends a connection only for the peer's protocol errors, and serves on`, { timeout: 60_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const frameArbitrary = fc.record({
    type: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constant(0xff)),
    flags: fc.oneof(fc.constantFrom(0, F.END_STREAM, F.END_HEADERS, F.END_HEADERS | F.END_STREAM, 0x8, 0x20, 0x2c), fc.integer({ min: 0, max: 255 })),
    id: fc.constantFrom(0, 1, 2, 3, 5, 7, 2 ** 31 - 1),
    payload: fc.oneof(fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)), fc.constant(requestBlock()), fc.constant(u32(0)), fc.constant(u32(2 ** 31 - 1)), fc.constant(Buffer.alloc(8))),
  });
  const allowed = /^HTTP\/2 protocol error from the test's client: |closed the connection$/;
  let ended = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(frameArbitrary, { minLength: 1, maxLength: 12 }), async (frames) => {
      const peer = await RawPeer.connect(server.port);
      const session = await server.nextSession();
      try {
        peer.send(...frames.map((f) => frame(f.type, f.flags, f.id, f.payload)));
        // A PING round trip, or the end of the connection: either way the server handled every frame.
        await Promise.race([peer.roundTrip("fuzzdone"), peer.closed]).catch(() => peer.closed);
        if (peer.isClosed || session.destroyed) {
          ended++;
          const error = await server.closed(session);
          assert.match(String(error?.message), allowed, `frames ${JSON.stringify(frames.map((f) => ({ ...f, payload: f.payload.toString("hex") })))}`);
        }
      } finally {
        peer.destroy();
      }
    }),
    { seed: FUZZ_SEED, numRuns: FUZZ_RUNS },
  );
  assert.ok(ended > 0 && ended < FUZZ_RUNS, `${ended} of ${FUZZ_RUNS} connections ended: the cases cover both outcomes`);
  const peer = await RawPeer.connect(server.port);
  t.after(() => peer.destroy());
  peer.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, requestBlock("/after")));
  assert.equal((await peer.answer(1)).response[":status"], "200");
});
