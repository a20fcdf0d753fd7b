// The gateway's HTTP/2 client (gateway/wire/h2.ts, hpack.ts; core/connect.ts) against another implementation of
// the protocol: Node's HTTP/2 server (nghttp2), set to do what etcd's Go server may do and more:
// Huffman-coded and indexed headers past the table's size, header blocks split into CONTINUATION
// frames, padded frames, small windows both ways, few concurrent streams, resets, GOAWAY and
// pings. Against etcd itself the client runs in every e2e test (differential.test.ts above all).
import assert from "node:assert/strict";
import { once } from "node:events";
import http2, { constants, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { before, test } from "node:test";
import { callHeaderBlock, connectSession } from "../../gateway/core/connect.ts";
import type { H2Session, H2Stream, HeaderFields } from "../../gateway/wire/h2.ts";
import { HeaderDecoder, encodeHeaders, huffmanDecode } from "../../gateway/wire/hpack.ts";
import { makeCorePki, type CorePki } from "../support/requests.ts";

let pki: CorePki;
before(async () => {
  pki = await makeCorePki();
});

interface Peer {
  session(options?: { streamWindow?: number }): Promise<H2Session>;
  streams: ServerHttp2Stream[];
  /** The server's side of each connection. */
  serverSessions: http2.ServerHttp2Session[];
  close(): Promise<void>;
}

async function peer(settings: http2.Settings, onStream: (stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void, extra: Partial<http2.SecureServerOptions> = {}): Promise<Peer> {
  const server = http2.createSecureServer({ key: pki.server.keyPem, cert: pki.server.certPem, settings, ...extra });
  const streams: ServerHttp2Stream[] = [];
  const serverSessions: http2.ServerHttp2Session[] = [];
  server.on("session", (session) => serverSessions.push(session));
  server.on("stream", (stream, headers) => {
    streams.push(stream);
    stream.on("error", () => {});
    onStream(stream, headers);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const sessions: H2Session[] = [];
  return {
    streams,
    serverSessions,
    async session(options = {}) {
      const windows = { streamWindow: options.streamWindow ?? 4 * 1024 * 1024, sessionWindow: 32 * 1024 * 1024 };
      const session = await connectSession({ host: "127.0.0.1", port, ca: pki.ca.certPem }, { ...windows, peer: "the test's server" }, 3_000);
      sessions.push(session);
      return session;
    },
    async close() {
      for (const session of sessions) session.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

interface Outcome {
  response?: HeaderFields;
  trailers?: HeaderFields;
  body: Buffer;
  ended: boolean;
}

/** Everything a stream delivers until its 'close'. */
function collect(stream: H2Stream): Promise<Outcome> {
  const outcome: Outcome = { body: Buffer.alloc(0), ended: false };
  const chunks: Buffer[] = [];
  stream.on("response", (headers: HeaderFields) => (outcome.response = headers));
  stream.on("trailers", (headers: HeaderFields) => (outcome.trailers = headers));
  stream.on("data", (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
  stream.on("end", () => (outcome.ended = true));
  return new Promise((resolve) => stream.on("close", () => resolve({ ...outcome, body: Buffer.concat(chunks) })));
}

function echo(stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders, respond: http2.OutgoingHttpHeaders = {}, trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" }, delayMs = 0): void {
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  stream.on("end", () => setTimeout(() => {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "x-path": String(headers[":path"]), ...respond }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    stream.end(Buffer.concat(chunks));
  }, delayMs));
}

test("HPACK: RFC 7541's examples C.3 and C.4 decode, the dynamic table carried from block to block", () => {
  for (const [encoding, blocks] of Object.entries({
    plain: ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865", "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"],
    huffman: ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf", "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"],
  })) {
    const decoder = new HeaderDecoder();
    const decoded = blocks.map((block) => decoder.decode(Buffer.from(block, "hex"), 64 * 1024));
    const first = { ":method": "GET", ":scheme": "http", ":path": "/", ":authority": "www.example.com" };
    assert.deepEqual(decoded, [first, { ...first, "cache-control": "no-cache" }, { ...first, ":scheme": "https", ":path": "/index.html", "custom-key": "custom-value" }], encoding);
  }
  // What the client sends decodes back to itself, names from the static table or literal.
  const fields: [string, string][] = [[":method", "POST"], [":path", "/etcdserverpb.KV/Range"], ["te", "trailers"], ["grpc-timeout", "5S"]];
  assert.deepEqual(new HeaderDecoder().decode(encodeHeaders(fields), 64 * 1024), Object.fromEntries(fields));
  // Padding must be a prefix of the end-of-string code: "a" is 00011, padded with ones.
  assert.equal(huffmanDecode(Buffer.from([0b00011111])), "a");
  assert.throws(() => huffmanDecode(Buffer.from([0b00011000])), /padding/);
  assert.throws(() => new HeaderDecoder().decode(Buffer.from([0xff, 0x00]), 64 * 1024), /neither table/);
});

test("headers past the table's size, split into CONTINUATION frames, and padded frames arrive intact", async (t) => {
  const server = await peer({ headerTableSize: 4096, maxHeaderListSize: 1 << 20 }, (stream, headers) => {
    const n = Number(headers["x-n"]);
    // Distinct headers each call: the table evicts, and indices move.
    const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`x-header-${i}`, `value-${n}-${i}-${"v".repeat(i * 3)}`]));
    echo(stream, headers, { ...many, "x-large": "L".repeat(20_000 + n) }, { "grpc-status": "0", "grpc-message": `done%20${n}` });
  }, { paddingStrategy: constants.PADDING_STRATEGY_MAX });
  t.after(() => server.close());
  const session = await server.session();
  for (let n = 0; n < 6; n++) {
    const stream = session.request(callHeaderBlock("127.0.0.1", "/etcdserverpb.KV/Range", [["x-n", String(n)]]));
    const outcome = collect(stream);
    stream.end(Buffer.from(`call ${n}`));
    const { response, trailers, body, ended } = await outcome;
    assert.ok(ended);
    assert.equal(body.toString(), `call ${n}`);
    assert.equal(response?.[":status"], "200");
    assert.equal(response?.["x-path"], "/etcdserverpb.KV/Range");
    assert.equal(response?.["x-large"], "L".repeat(20_000 + n));
    for (let i = 0; i < 40; i++) assert.equal(response?.[`x-header-${i}`], `value-${n}-${i}-${"v".repeat(i * 3)}`);
    assert.deepEqual(trailers, { "grpc-status": "0", "grpc-message": `done%20${n}` });
  }
});

test("flow control both ways: 3 MiB out through a 64 KiB window, 3 MiB back into one, with a stream paused", async (t) => {
  const server = await peer({ initialWindowSize: 65_535 }, (stream, headers) => echo(stream, headers));
  t.after(() => server.close());
  const session = await server.session({ streamWindow: 65_535 });
  const body = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
  const calls = [0, 1, 2].map(() => {
    const stream = session.request(callHeaderBlock("127.0.0.1", "/echo", []));
    const outcome = collect(stream);
    // Written in pieces: write() answers false while the window is closed, and 'drain' follows.
    let sent = 0;
    const more = () => {
      while (sent < body.length) {
        const piece = body.subarray(sent, (sent += 256 * 1024));
        if (!stream.write(piece)) return void stream.once("drain", more);
      }
      stream.end();
    };
    more();
    return { stream, outcome };
  });
  // The first is paused at its first answer bytes: the others complete while it waits.
  const paused = calls[0]!.stream;
  let pausedBytes = 0;
  paused.once("data", () => paused.pause());
  paused.on("data", (chunk: Buffer) => (pausedBytes += chunk.length));
  for (const { outcome } of calls.slice(1)) assert.ok((await outcome).body.equals(body));
  // Held at its window: no more than 64 KiB (plus the frame that paused it) came.
  assert.ok(pausedBytes <= 65_535 + 16_384, `${pausedBytes} bytes arrived while paused`);
  paused.resume();
  assert.ok((await calls[0]!.outcome).body.equals(body));
});

test("at most the peer's MAX_CONCURRENT_STREAMS are open; the others wait and then run in order", async (t) => {
  let open = 0;
  let most = 0;
  const order: string[] = [];
  const server = await peer({ maxConcurrentStreams: 2 }, (stream, headers) => {
    open++;
    most = Math.max(most, open);
    order.push(String(headers["x-n"]));
    stream.on("close", () => open--);
    echo(stream, headers, {}, undefined, 20);
  });
  t.after(() => server.close());
  const session = await server.session();
  // The peer's SETTINGS arrive with its first answer: one call makes sure they are in.
  const first = session.request(callHeaderBlock("127.0.0.1", "/first", []));
  const firstDone = collect(first);
  first.end();
  await firstDone;
  const outcomes = Array.from({ length: 8 }, (_, n) => {
    const stream = session.request(callHeaderBlock("127.0.0.1", "/call", [["x-n", String(n)]]));
    const outcome = collect(stream);
    stream.end(Buffer.from(String(n)));
    return outcome;
  });
  // A waiting stream holds what it is given: write() answers false, and 'drain' comes once it started.
  const queued = session.request(callHeaderBlock("127.0.0.1", "/call", [["x-n", "8"]]));
  const queuedOutcome = collect(queued);
  assert.equal(queued.write(Buffer.from("8")), false);
  await once(queued, "drain");
  queued.end();
  outcomes.push(queuedOutcome);
  const bodies = (await Promise.all(outcomes)).map((outcome) => outcome.body.toString());
  assert.deepEqual(bodies, ["0", "1", "2", "3", "4", "5", "6", "7", "8"]);
  assert.equal(most, 2);
  assert.deepEqual(order, ["undefined", "0", "1", "2", "3", "4", "5", "6", "7", "8"]);
});

test("a reset, GOAWAY and pings: a reset stream closes without 'end'; after GOAWAY no stream opens; pings are answered both ways", async (t) => {
  const server = await peer({}, (stream, headers) => {
    if (headers[":path"] === "/reset") stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    else echo(stream, headers);
  });
  t.after(() => server.close());
  const session = await server.session();
  const reset = session.request(callHeaderBlock("127.0.0.1", "/reset", []));
  const resetOutcome = collect(reset);
  reset.end();
  const { ended, response } = await resetOutcome;
  assert.equal(ended, false);
  assert.equal(response, undefined);

  const pinged = await new Promise<Error | null>((resolve) => session.ping(resolve));
  assert.equal(pinged, null);
  // The server pings the client: answered, or its callback would get an error.
  const serverSession = server.serverSessions[0]!;
  const answered = await new Promise<Error | null>((resolve) => serverSession.ping((error) => resolve(error)));
  assert.equal(answered, null);

  const goaway = once(session, "goaway");
  serverSession.goaway(constants.NGHTTP2_NO_ERROR, 1);
  await goaway;
  assert.equal(session.usable, false);
  const refused = session.request(callHeaderBlock("127.0.0.1", "/after", []));
  const refusedOutcome = await collect(refused);
  assert.equal(refusedOutcome.response, undefined);
});

test("the connection lost: open streams close without an answer, and the session closes with the error", async (t) => {
  let arrive: (stream: ServerHttp2Stream) => void;
  const arrived = new Promise<ServerHttp2Stream>((resolve) => (arrive = resolve));
  const server = await peer({}, (stream) => arrive(stream));
  t.after(() => server.close());
  const session = await server.session();
  const stream = session.request(callHeaderBlock("127.0.0.1", "/hang", []));
  const outcome = collect(stream);
  stream.end();
  const closed = once(session, "close");
  (await arrived).session!.destroy();
  const [error] = await closed;
  assert.ok(error instanceof Error);
  const { ended, response } = await outcome;
  assert.equal(ended, false);
  assert.equal(response, undefined);
});
