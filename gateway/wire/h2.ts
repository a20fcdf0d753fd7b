// HTTP/2 (RFC 9113) as the gateway speaks it on both of its sides: a client to core etcd
// (core/upstream.ts), a server to its tenant (shell/tenant-server.ts). Only what gRPC over TLS
// needs: one connection's streams, flow control both ways, SETTINGS, PING, GOAWAY, RST_STREAM.
// Node's own http2 kept two stream objects per call that only a full garbage collection frees, and
// its stream set-up alone was a seventh of the gateway's busy CPU; here a call is one small object,
// and the frames made in one turn of the event loop go out in one write.
//
// The tenant may be hostile, so everything a peer can make this side hold or repeat is bounded, as
// nghttp2 bounds it for Node's server: streams at once, header blocks and lists (CONTINUATION
// floods, HPACK bombs), resets (rapid reset), SETTINGS, answers owed to a peer that does not read,
// and the flow-control windows this side gave. A peer past a bound gets GOAWAY with a reason.
import { EventEmitter } from "node:events";
import type { TLSSocket } from "node:tls";
import { giveBack, takeBuffer } from "./buffers.ts";
import { HeaderDecoder, HpackError } from "./hpack.ts";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME_HEADER = 9;
const FrameType = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PUSH_PROMISE: 0x5, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8, CONTINUATION: 0x9 } as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const Setting = { ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5, MAX_HEADER_LIST_SIZE: 0x6 } as const;
const ErrorCode = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, FLOW_CONTROL_ERROR: 0x3, FRAME_SIZE_ERROR: 0x6, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9, ENHANCE_YOUR_CALM: 0xb } as const;

// Frames this side accepts: HTTP/2's default, announced by not changing it.
const MAX_RECEIVED_FRAME = 16_384;
const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
const MAX_STREAM_ID = 2 ** 31 - 1;
// gRPC's header blocks are a few hundred bytes. The list bound is announced (MAX_HEADER_LIST_SIZE).
const MAX_HEADER_BLOCK = 64 * 1024;
const MAX_HEADER_LIST = 64 * 1024;
// A header block in more frames than this is a flood: Go's encoder splits at the frame size.
const MAX_CONTINUATIONS = 32;
// nghttp2's defaults, which Node's server applied: resets the peer may send, as a burst and per second.
const RESET_BURST = 1_000;
const RESETS_PER_SECOND = 33;
// grpc-go sends SETTINGS as its window estimate grows: a few per connection.
const SETTINGS_BURST = 100;
const SETTINGS_PER_SECOND = 10;
// Bytes unsent past which DATA waits for the socket: a page or two, not the socket's 16 KiB (a
// 'drain' per list page). Acknowledgements (PING, SETTINGS) queued beyond it, and bytes unsent at
// all, past which a peer that does not read is cut off.
const SOCKET_BACKLOG = 1024 * 1024;
const MAX_UNSENT_ACKS = 1_000;
const MAX_UNSENT_BYTES = 64 * 1024 * 1024;
const PREFACE_TIMEOUT_MS = 10_000;

export type HeaderFields = Record<string, string>;

export interface SessionOptions {
  /** The window each stream offers the peer (its data in flight). */
  streamWindow: number;
  /** The window of the whole connection. */
  sessionWindow: number;
  /** Who the peer is, for messages: "core etcd", "the tenant". */
  peer: string;
  /** Server only: streams the peer may open at once (MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams?: number;
}

/**
 * One call. Events: 'response' and 'trailers' (client: the header blocks of the answer), 'data'
 * (DATA payloads, in order; a payload is only valid during its event, a view of the socket's
 * read buffer: what outlives it is copied), 'end' (the peer ended its side), 'close' (the stream is gone: both
 * sides ended, or reset, or the connection lost), 'drain' (what write() held went out).
 */
export class H2Stream extends EventEmitter {
  id = 0;
  closed = false;
  private readonly session: H2Session;
  /** The request's header block, until the stream starts (client). */
  opening: Buffer | undefined;
  headersSent = false;
  /** Bytes to send, and whether this side ends after them (with trailers, server). */
  readonly pending: Buffer[] = [];
  pendingBytes = 0;
  /** Buffers from wire/buffers.ts's pool among `pending`: given back once all went out. */
  pooled: Buffer[] = [];
  ending = false;
  trailers: Buffer | undefined;
  endSent = false;
  remoteEnded = false;
  /** The peer's window for this stream, and the one this side gave it. */
  sendWindow = 0;
  receiveWindow = 0;
  /** Bytes of the DATA frame being received. */
  received = 0;
  /** Bytes received and consumed but not yet given back to the peer as window. */
  unacknowledged = 0;
  /** Server: connection window this stream's consumed bytes hold while it is paused. */
  connectionDebt = 0;
  paused = false;
  /** write() answered false: 'drain' is owed once what it holds went out. */
  needsDrain = false;
  gotHeaders = false;

  constructor(session: H2Session) {
    super();
    this.session = session;
  }

  /** Queues data; false when it waits for a window ('drain' follows). `pooled`: see the field. */
  write(data: Buffer, pooled = false): boolean {
    if (this.closed || this.ending) return false;
    this.hold(data, pooled);
    this.session.send(this);
    this.needsDrain = this.pendingBytes > 0;
    return !this.needsDrain;
  }

  /** Ends this side, after `data` if given, with a trailer block (server) or an empty DATA frame. */
  end(data?: Buffer, trailers?: Buffer): void {
    if (this.closed || this.ending) return;
    if (data) this.hold(data, false);
    this.ending = true;
    this.trailers = trailers;
    this.session.send(this);
  }

  /**
   * Server: sends the response's header block; `endStream` for a trailers-only answer, which also
   * resets a peer still sending (RST_STREAM NO_ERROR, RFC 9113 8.1, as grpc-go's servers do):
   * nothing more arrives.
   */
  respond(block: Buffer, endStream = false): void {
    this.session.respond(this, block, endStream);
  }

  private hold(data: Buffer, pooled: boolean): void {
    if (data.length === 0) return;
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (pooled) this.pooled.push(data);
  }

  /** Resets the stream (CANCEL by default); 'close' follows. */
  close(code: number = ErrorCode.CANCEL): void {
    this.session.reset(this, code);
  }

  /** Stops giving the peer window for this stream: its data stops once what is in flight came. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.session.acknowledge(this, 0);
  }
}

/**
 * One connection over an established TLS socket (ALPN h2). Events: 'stream' (server: a new call,
 * with its request's fields), 'goaway' (client: no new streams; the ones the peer took go on),
 * 'close' (the connection is gone, with an Error when it failed).
 */
export class H2Session extends EventEmitter {
  closed = false;
  destroyed = false;
  readonly socket: TLSSocket;
  private readonly role: "client" | "server";
  private readonly options: SessionOptions;
  /** Server: streams the peer may open at once. */
  private readonly maxStreams: number;
  private readonly streams = new Map<number, H2Stream>();
  /** Client: streams opened while the peer's MAX_CONCURRENT_STREAMS were in use, in order. */
  private readonly waiting: H2Stream[] = [];
  /** Streams holding data while a window is closed or the socket is full, in order. */
  private readonly blocked = new Set<H2Stream>();
  private nextId = 1;
  /** Server: the highest stream the peer opened (GOAWAY names it). */
  private lastPeerId = 0;
  private goawaySent = false;
  private readonly decoder = new HeaderDecoder();
  // The peer's settings: HTTP/2's defaults until its SETTINGS frame came.
  private peerMaxStreams = Infinity;
  private peerStreamWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16_384;
  private sendWindow = DEFAULT_WINDOW;
  private receiveWindow = DEFAULT_WINDOW;
  /** Connection-level bytes consumed and not yet given back. */
  private unacknowledged = 0;
  /** Server: bytes of the client's preface still to come. */
  private prefaceLeft: number;
  /** The frame being received, and a frame header split over socket reads. */
  private current: { type: number; flags: number; id: number; left: number; parts: Buffer[]; streamed: boolean } | undefined;
  private readonly partialHeader = Buffer.alloc(FRAME_HEADER);
  private headerFill = 0;
  /** A header block split over HEADERS and CONTINUATION frames. */
  private continued: { id: number; flags: number; parts: Buffer[]; bytes: number } | undefined;
  private readonly out: Buffer[] = [];
  private readonly sent: Buffer[] = [];
  private flushing = false;
  private unsentAcks = 0;
  private readonly resets = new Bucket(RESET_BURST, RESETS_PER_SECOND);
  private readonly settingsFrames = new Bucket(SETTINGS_BURST, SETTINGS_PER_SECOND);
  private readonly pings = new Map<string, (error: Error | null) => void>();
  private pingCount = 0;

  constructor(socket: TLSSocket, role: "client" | "server", options: SessionOptions) {
    super();
    this.socket = socket;
    this.role = role;
    this.options = options;
    this.maxStreams = options.maxConcurrentStreams ?? 100;
    this.prefaceLeft = role === "server" ? PREFACE.length : 0;
    const settings: [number, number][] = [[Setting.INITIAL_WINDOW_SIZE, options.streamWindow], [Setting.MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST]];
    if (role === "client") {
      settings.push([Setting.ENABLE_PUSH, 0]);
      this.queue(PREFACE);
    } else {
      settings.push([Setting.MAX_CONCURRENT_STREAMS, this.maxStreams]);
      const timer = setTimeout(() => this.prefaceLeft > 0 && this.destroy(new Error(`no HTTP/2 preface from ${options.peer} within ${PREFACE_TIMEOUT_MS} ms`)), PREFACE_TIMEOUT_MS);
      timer.unref();
    }
    const payload = Buffer.alloc(6 * settings.length);
    settings.forEach(([id, value], i) => {
      payload.writeUInt16BE(id, 6 * i);
      payload.writeUInt32BE(value, 6 * i + 2);
    });
    this.frame(FrameType.SETTINGS, 0, 0, payload);
    this.giveConnectionWindow(options.sessionWindow - DEFAULT_WINDOW, true);
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => this.destroy(new Error(`${options.peer} closed the connection`)));
    socket.on("drain", () => {
      this.unsentAcks = 0;
      for (const stream of [...this.blocked]) this.send(stream);
    });
  }

  /** Whether the socket holds a backlog: DATA waits for its 'drain'. */
  private get backlogged(): boolean {
    return this.socket.writableLength > SOCKET_BACKLOG;
  }

  /** Whether new streams may be opened (not after close(), GOAWAY or destroy()). */
  get usable(): boolean {
    return !this.closed;
  }

  /** Streams open or waiting to start: the calls in flight. */
  get openStreams(): number {
    return this.streams.size + this.waiting.length;
  }

  /** Client: opens a call with the request's header block (wire/hpack.ts's encodeHeaders). */
  request(block: Buffer): H2Stream {
    const stream = new H2Stream(this);
    stream.opening = block;
    if (!this.usable) {
      process.nextTick(() => this.finish(stream));
      return stream;
    }
    if (this.streams.size < this.peerMaxStreams) this.start(stream);
    else this.waiting.push(stream);
    return stream;
  }

  /** Sends a PING; `callback` runs with its answer, or an error when the connection went first. */
  ping(callback: (error: Error | null) => void): void {
    if (this.destroyed) return process.nextTick(callback, new Error(`the connection to ${this.options.peer} closed`));
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(++this.pingCount, 4);
    this.pings.set(payload.toString("latin1"), callback);
    this.frame(FrameType.PING, 0, 0, payload);
  }

  /** No new streams (a server says so with GOAWAY at once); the connection ends once the open ones did. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.role === "server") this.goaway(ErrorCode.NO_ERROR, "");
    for (const stream of this.waiting.splice(0)) this.finish(stream);
    this.endIfIdle();
  }

  /**
   * Ends the connection at once: open streams close without an answer. `flushed`: what was queued
   * goes out first (a GOAWAY's reason), within a second.
   */
  destroy(error?: Error, flushed = false): void {
    if (this.destroyed) return;
    if (flushed) {
      this.flush();
      if (this.destroyed) return;
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1_000).unref();
    } else {
      this.socket.destroy();
    }
    this.destroyed = true;
    this.closed = true;
    for (const stream of [...this.streams.values(), ...this.waiting]) this.finish(stream);
    this.streams.clear();
    this.waiting.length = 0;
    for (const callback of this.pings.values()) callback(new Error(`the connection to ${this.options.peer} closed`));
    this.pings.clear();
    this.emit("close", error);
  }

  /** Sends what a stream holds, as far as both windows and the socket allow. */
  send(stream: H2Stream): void {
    if (!stream.headersSent || stream.closed || stream.endSent) return;
    while (stream.pendingBytes > 0) {
      const size = Math.min(stream.pendingBytes, stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (size <= 0 || this.backlogged) {
        this.blocked.add(stream);
        return;
      }
      const payload = take(stream, size);
      stream.sendWindow -= size;
      this.sendWindow -= size;
      stream.endSent = stream.ending && stream.pendingBytes === 0 && !stream.trailers;
      this.frame(FrameType.DATA, stream.endSent ? END_STREAM : 0, stream.id, payload);
    }
    if (stream.pooled.length > 0) {
      this.sent.push(...stream.pooled);
      stream.pooled = [];
    }
    if (stream.ending && !stream.endSent) {
      stream.endSent = true;
      if (stream.trailers) this.headers(stream.id, stream.trailers, true);
      else this.frame(FrameType.DATA, END_STREAM, stream.id, EMPTY);
    }
    this.blocked.delete(stream);
    // Also for a stream that was written to while it waited to start.
    if (stream.needsDrain) {
      stream.needsDrain = false;
      stream.emit("drain");
    }
    if (stream.endSent && stream.remoteEnded) this.finish(stream);
  }

  respond(stream: H2Stream, block: Buffer, endStream: boolean): void {
    if (stream.closed || stream.headersSent) return;
    stream.headersSent = true;
    this.headers(stream.id, block, endStream);
    if (!endStream) return this.send(stream);
    stream.ending = stream.endSent = true;
    if (stream.remoteEnded) this.finish(stream);
    else this.reset(stream, ErrorCode.NO_ERROR);
  }

  /** Resets a stream this side no longer wants. */
  reset(stream: H2Stream, code: number): void {
    if (stream.closed) return;
    if (stream.id !== 0) this.resetFrame(stream.id, code);
    this.finish(stream);
  }

  /** Gives the peer back the window a stream's consumed data took (at once unless paused). */
  acknowledge(stream: H2Stream, bytes: number): void {
    stream.unacknowledged += bytes;
    if (stream.paused || stream.closed) return;
    if (stream.connectionDebt > 0) {
      this.giveConnectionWindow(stream.connectionDebt);
      stream.connectionDebt = 0;
    }
    // In steps of a quarter window, one WINDOW_UPDATE per few frames; all at once on resume().
    if (stream.unacknowledged > 0 && (bytes === 0 || stream.unacknowledged >= this.options.streamWindow / 4)) {
      this.windowUpdate(stream.id, stream.unacknowledged);
      stream.receiveWindow += stream.unacknowledged;
      stream.unacknowledged = 0;
    }
  }

  private start(stream: H2Stream): void {
    if (this.nextId > MAX_STREAM_ID) {
      // Stream ids are spent: this connection takes no more, the next one will.
      this.emit("goaway");
      process.nextTick(() => this.finish(stream));
      this.close();
      return;
    }
    stream.id = this.nextId;
    this.nextId += 2;
    this.open(stream);
    stream.headersSent = true;
    this.headers(stream.id, stream.opening!, false);
    stream.opening = undefined;
    this.send(stream);
  }

  private open(stream: H2Stream): void {
    stream.sendWindow = this.peerStreamWindow;
    stream.receiveWindow = this.options.streamWindow;
    this.streams.set(stream.id, stream);
  }

  private finish(stream: H2Stream): void {
    if (stream.closed) return;
    stream.closed = true;
    this.blocked.delete(stream);
    if (stream.id !== 0) this.streams.delete(stream.id);
    else if (this.waiting.includes(stream)) this.waiting.splice(this.waiting.indexOf(stream), 1);
    // Window a server held for the stream: its bytes will never be consumed.
    if (this.role === "server") this.giveConnectionWindow(stream.connectionDebt + stream.received);
    stream.emit("close");
    const next = this.usable ? this.waiting.shift() : undefined;
    if (next) this.start(next);
    this.endIfIdle();
  }

  private endIfIdle(): void {
    if (!this.closed || this.destroyed || this.streams.size > 0 || this.socket.writableEnded) return;
    this.goaway(ErrorCode.NO_ERROR, "");
    this.flush();
    this.socket.end();
  }

  /**
   * Parses frames as the socket delivers them. `chunk` is only valid during the call (a client's
   * socket reads into one buffer): what outlives it is copied. A DATA frame's payload is handed on
   * piece by piece as it arrives, never joined: a list page's frames span TLS records.
   */
  receive(chunk: Buffer): void {
    let at = 0;
    try {
      if (this.prefaceLeft > 0) at = this.preface(chunk);
      while (at < chunk.length && !this.destroyed) {
        let current = this.current;
        if (!current) {
          let header: Buffer;
          if (this.headerFill === 0 && chunk.length - at >= FRAME_HEADER) {
            header = chunk.subarray(at, (at += FRAME_HEADER));
          } else {
            const n = Math.min(FRAME_HEADER - this.headerFill, chunk.length - at);
            chunk.copy(this.partialHeader, this.headerFill, at, (at += n));
            this.headerFill += n;
            if (this.headerFill < FRAME_HEADER) return;
            this.headerFill = 0;
            header = this.partialHeader;
          }
          current = this.frameStarts(header);
        }
        const n = Math.min(current.left, chunk.length - at);
        if (n > 0) {
          const piece = chunk.subarray(at, (at += n));
          current.left -= n;
          if (current.streamed) this.onDataPiece(current.id, piece);
          else current.parts.push(current.left > 0 ? Buffer.from(piece) : piece);
        }
        if (current.left > 0) {
          this.current = current;
          return;
        }
        this.current = undefined;
        if (current.streamed) this.onDataEnd(current.flags, current.id);
        else this.onFrame(current.type, current.flags, current.id, current.parts.length === 1 ? current.parts[0]! : Buffer.concat(current.parts));
      }
    } catch (error) {
      // Anything else thrown here is a bug of this side's: the connection ends, the process goes on.
      if (error instanceof ConnectionError) this.fail(error);
      else this.destroy(error as Error);
    }
  }

  /** Server: checks the client's preface as it comes; returns where the frames start. */
  private preface(chunk: Buffer): number {
    const n = Math.min(this.prefaceLeft, chunk.length);
    const from = PREFACE.length - this.prefaceLeft;
    if (!chunk.subarray(0, n).equals(PREFACE.subarray(from, from + n))) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the connection did not start with HTTP/2's preface");
    this.prefaceLeft -= n;
    return n;
  }

  /** A frame's header: checks what can be checked before its payload, DATA against the windows. */
  private frameStarts(header: Buffer): NonNullable<H2Session["current"]> {
    const length = header.readUIntBE(0, 3);
    if (length > MAX_RECEIVED_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `a frame of ${length} bytes, above the ${MAX_RECEIVED_FRAME} this side takes`);
    const type = header[3]!;
    const flags = header[4]!;
    const id = header.readUInt32BE(5) & 0x7fffffff;
    if (this.continued && type !== FrameType.CONTINUATION) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted");
    if (type === FrameType.DATA) {
      if (id === 0 || this.idle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on stream ${id}, which is not open`);
      this.receiveWindow -= length;
      if (this.receiveWindow < 0) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection's window");
      const stream = this.streams.get(id);
      if (stream) {
        stream.receiveWindow -= length;
        if (stream.receiveWindow < 0) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, `DATA beyond stream ${id}'s window`);
      }
    }
    return { type, flags, id, left: length, parts: [], streamed: type === FrameType.DATA && !(flags & PADDED) };
  }

  /** A stream the peer could open but has not: a server's above the last one opened; any a client did not open. */
  private idle(id: number): boolean {
    return this.role === "server" ? id > this.lastPeerId : id >= this.nextId;
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.DATA: {
        // A padded frame, whole: its padding is counted, then dropped.
        const data = unpad(flags, payload);
        this.onDataPiece(id, data, payload.length - data.length);
        return this.onDataEnd(flags, id);
      }
      case FrameType.HEADERS: {
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
        let block = unpad(flags, payload);
        if (flags & PRIORITY) block = block.subarray(5);
        if (flags & END_HEADERS) return this.onHeaders(id, flags, block);
        this.continued = { id, flags, parts: [Buffer.from(block)], bytes: block.length };
        return;
      }
      case FrameType.CONTINUATION: {
        const continued = this.continued;
        if (!continued || continued.id !== id) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a CONTINUATION frame without its HEADERS");
        continued.parts.push(Buffer.from(payload));
        continued.bytes += payload.length;
        if (continued.bytes > MAX_HEADER_BLOCK) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `a header block of more than ${MAX_HEADER_BLOCK} bytes`);
        if (continued.parts.length > MAX_CONTINUATIONS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `a header block in more than ${MAX_CONTINUATIONS} frames`);
        if (!(flags & END_HEADERS)) return;
        this.continued = undefined;
        return this.onHeaders(id, continued.flags, Buffer.concat(continued.parts));
      }
      case FrameType.RST_STREAM: {
        if (payload.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of other than 4 bytes");
        if (id === 0 || this.idle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on stream ${id}, which is not open`);
        if (this.role === "server" && !this.resets.take()) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `streams reset faster than ${RESETS_PER_SECOND} a second`);
        const stream = this.streams.get(id);
        if (stream) this.finish(stream);
        return;
      }
      case FrameType.SETTINGS:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
        if (flags & ACK) return;
        if (payload.length % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of a length not a multiple of 6");
        if (!this.settingsFrames.take()) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `SETTINGS faster than ${SETTINGS_PER_SECOND} a second`);
        return this.onSettings(payload);
      case FrameType.PING: {
        if (payload.length !== 8 || id !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of other than 8 bytes, or on a stream");
        if (!(flags & ACK)) return this.acknowledgement(FrameType.PING, Buffer.from(payload));
        const key = payload.toString("latin1");
        const callback = this.pings.get(key);
        this.pings.delete(key);
        callback?.(null);
        return;
      }
      case FrameType.GOAWAY: {
        if (payload.length < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY of less than 8 bytes");
        const lastId = payload.readUInt32BE(0) & 0x7fffffff;
        this.closed = true;
        // Streams the peer never took are refused: a read among them may be sent again.
        if (this.role === "client") for (const stream of [...this.streams.values()]) if (stream.id > lastId) this.finish(stream);
        for (const stream of this.waiting.splice(0)) this.finish(stream);
        this.emit("goaway");
        this.endIfIdle();
        return;
      }
      case FrameType.WINDOW_UPDATE: {
        if (payload.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of other than 4 bytes");
        const increment = payload.readUInt32BE(0) & 0x7fffffff;
        if (id === 0) {
          if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a connection WINDOW_UPDATE of 0");
          this.sendWindow += increment;
          if (this.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "the connection's window above 2^31-1");
          for (const stream of [...this.blocked]) this.send(stream);
          return;
        }
        // Stream errors taken as the connection's (RFC 9113 5.4.1): a reset the peer could provoke
        // at will would start and drop calls without limit (MadeYouReset, CVE-2025-8671).
        if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `a WINDOW_UPDATE of 0 on stream ${id}`);
        const stream = this.streams.get(id);
        if (!stream) return;
        stream.sendWindow += increment;
        if (stream.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, `stream ${id}'s window above 2^31-1`);
        this.send(stream);
        return;
      }
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE, which this side does not take");
      default:
        return; // PRIORITY and unknown frame types are ignored (RFC 9113 5.5).
    }
  }

  /** Part of a DATA frame's payload (`padding`: bytes of the frame that carry none). */
  private onDataPiece(id: number, data: Buffer, padding = 0): void {
    const counted = data.length + padding;
    const stream = this.streams.get(id);
    // A client gives the connection's window back at once: one slow stream to core etcd must not
    // stall the tenant's other calls. So does a server for a stream that is gone.
    if (this.role === "client" || !stream) this.giveConnectionWindow(counted);
    if (!stream) return; // reset by this side while the peer was still sending
    if (data.length > 0 && !stream.remoteEnded) stream.emit("data", data);
    stream.received += counted;
  }

  private onDataEnd(flags: number, id: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    const received = stream.received;
    stream.received = 0;
    // A server holds the connection's window for a paused stream too: what a tenant can make the
    // gateway hold is one session window per connection, not one stream window per stream.
    if (this.role === "server") {
      if (stream.paused) stream.connectionDebt += received;
      else this.giveConnectionWindow(received);
    }
    if (flags & END_STREAM) this.ended(stream);
    else this.acknowledge(stream, received);
  }

  private onHeaders(id: number, flags: number, block: Buffer): void {
    if (block.length > MAX_HEADER_BLOCK) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `a header block of more than ${MAX_HEADER_BLOCK} bytes`);
    // Decoded even for a stream that is gone or refused: the table must follow every block.
    let fields: HeaderFields;
    try {
      fields = this.decoder.decode(block, MAX_HEADER_LIST);
    } catch (error) {
      if (!(error instanceof HpackError)) throw error;
      throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, error.message);
    }
    const stream = this.streams.get(id);
    if (!stream) {
      if (this.role === "server" && this.idle(id)) this.accept(id, flags, fields);
      return;
    }
    if (this.role === "client" && !stream.gotHeaders) {
      stream.gotHeaders = true;
      stream.emit("response", fields);
    } else {
      stream.emit("trailers", fields);
    }
    if (flags & END_STREAM) this.ended(stream);
  }

  /** Server: a stream the peer opens. */
  private accept(id: number, flags: number, fields: HeaderFields): void {
    if (id % 2 === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `stream ${id}: a client's streams are odd`);
    this.lastPeerId = id;
    if (this.closed || this.streams.size >= this.maxStreams) {
      // Refused streams count as resets: they cost this side as much, and the peer chose them.
      if (!this.resets.take()) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `streams reset faster than ${RESETS_PER_SECOND} a second`);
      return this.resetFrame(id, ErrorCode.REFUSED_STREAM);
    }
    const stream = new H2Stream(this);
    stream.id = id;
    this.open(stream);
    this.emit("stream", stream, fields);
    if (flags & END_STREAM) this.ended(stream);
  }

  private ended(stream: H2Stream): void {
    if (stream.closed || stream.remoteEnded) return;
    stream.remoteEnded = true;
    stream.emit("end");
    if (stream.endSent) this.finish(stream);
    // Core etcd answered in full: a side still sending is cut (gRPC's server ends with its status).
    else if (this.role === "client") this.reset(stream, ErrorCode.NO_ERROR);
  }

  private onSettings(payload: Buffer): void {
    let streamWindow = this.peerStreamWindow;
    for (let at = 0; at < payload.length; at += 6) {
      const value = payload.readUInt32BE(at + 2);
      switch (payload.readUInt16BE(at)) {
        case Setting.ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH other than 0 or 1");
          break;
        case Setting.MAX_CONCURRENT_STREAMS:
          this.peerMaxStreams = value;
          break;
        case Setting.INITIAL_WINDOW_SIZE:
          if (value > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window above 2^31-1");
          streamWindow = value;
          break;
        case Setting.MAX_FRAME_SIZE:
          if (value < 16_384 || value > 2 ** 24 - 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE outside 2^14 to 2^24-1");
          this.peerMaxFrame = value;
          break;
      }
    }
    // Applied once per frame, whatever it repeats: each change walks every stream.
    const delta = streamWindow - this.peerStreamWindow;
    this.peerStreamWindow = streamWindow;
    if (delta !== 0) for (const stream of this.streams.values()) stream.sendWindow += delta;
    this.acknowledgement(FrameType.SETTINGS, EMPTY);
    for (const stream of [...this.blocked]) this.send(stream);
    while (this.waiting.length > 0 && this.streams.size < this.peerMaxStreams) this.start(this.waiting.shift()!);
  }

  /** A PING or SETTINGS acknowledgement; a peer that sends them faster than it reads the answers is cut off. */
  private acknowledgement(type: number, payload: Buffer): void {
    if (this.backlogged && ++this.unsentAcks > MAX_UNSENT_ACKS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `more than ${MAX_UNSENT_ACKS} PING or SETTINGS acknowledgements unread`);
    this.frame(type, ACK, 0, payload);
  }

  /** Ends the connection for a protocol error of the peer's, telling it why (GOAWAY's debug data). */
  private fail(error: ConnectionError): void {
    if (this.destroyed) return;
    this.goaway(error.code, error.message);
    this.destroy(new PeerProtocolError(`HTTP/2 protocol error from ${this.options.peer}: ${error.message}`), true);
  }

  private goaway(code: number, message: string): void {
    if (this.goawaySent) return;
    this.goawaySent = true;
    const debug = Buffer.from(message, "latin1");
    const payload = Buffer.alloc(8 + debug.length);
    payload.writeUInt32BE(this.lastPeerId, 0);
    payload.writeUInt32BE(code, 4);
    debug.copy(payload, 8);
    this.frame(FrameType.GOAWAY, 0, 0, payload);
  }

  /** A header block, split into CONTINUATION frames past the peer's frame size. */
  private headers(id: number, block: Buffer, endStream: boolean): void {
    const end = endStream ? END_STREAM : 0;
    if (block.length <= this.peerMaxFrame) return this.frame(FrameType.HEADERS, END_HEADERS | end, id, block);
    this.frame(FrameType.HEADERS, end, id, block.subarray(0, this.peerMaxFrame));
    for (let at = this.peerMaxFrame; at < block.length; at += this.peerMaxFrame) {
      const last = at + this.peerMaxFrame >= block.length;
      this.frame(FrameType.CONTINUATION, last ? END_HEADERS : 0, id, block.subarray(at, at + this.peerMaxFrame));
    }
  }

  private resetFrame(id: number, code: number): void {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(code, 0);
    this.frame(FrameType.RST_STREAM, 0, id, payload);
  }

  /** Connection window back to the peer, in steps of a quarter window (`now`: the first one). */
  private giveConnectionWindow(bytes: number, now = false): void {
    this.unacknowledged += bytes;
    if (this.unacknowledged <= 0 || (!now && this.unacknowledged < this.options.sessionWindow / 4)) return;
    this.windowUpdate(0, this.unacknowledged);
    this.receiveWindow += this.unacknowledged;
    this.unacknowledged = 0;
  }

  private windowUpdate(id: number, increment: number): void {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(increment, 0);
    this.frame(FrameType.WINDOW_UPDATE, 0, id, payload);
  }

  private frame(type: number, flags: number, id: number, payload: Buffer): void {
    const header = Buffer.allocUnsafe(FRAME_HEADER);
    header.writeUIntBE(payload.length, 0, 3);
    header[3] = type;
    header[4] = flags;
    header.writeUInt32BE(id, 5);
    this.queue(header);
    if (payload.length > 0) this.queue(payload);
  }

  /** Frames made in one turn of the event loop go out in one write (one TLS record or few). */
  private queue(bytes: Buffer): void {
    // Nothing goes out once this side ended the socket (after a GOAWAY, with no streams left).
    if (this.destroyed || this.socket.writableEnded) return;
    this.out.push(bytes);
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    if (this.out.length === 0 || this.destroyed || this.socket.writableEnded) return;
    // The frames are joined (copied) into a buffer from the pool that goes back once written; the
    // pooled buffers among them go back now. A peer that reads nothing at all is cut off. A fresh buffer per write (Buffer.concat) is external
    // memory to V8: under the bench's list load, GC took three times the CPU it takes now.
    if (this.out.length === 1) {
      this.socket.write(this.out[0]!);
    } else {
      let length = 0;
      for (const part of this.out) length += part.length;
      const joined = takeBuffer(length);
      let at = 0;
      for (const part of this.out) at += part.copy(joined, at);
      this.socket.write(joined.subarray(0, length), (error) => error || giveBack(joined));
    }
    this.out.length = 0;
    for (const buffer of this.sent) giveBack(buffer);
    this.sent.length = 0;
    if (this.socket.writableLength > MAX_UNSENT_BYTES) this.destroy(new Error(`${this.options.peer} left more than ${MAX_UNSENT_BYTES} bytes unread`));
  }
}

/** A token bucket: `burst` at once, `perSecond` after. */
class Bucket {
  private tokens: number;
  private last = performance.now();
  private readonly burst: number;
  private readonly perSecond: number;

  constructor(burst: number, perSecond: number) {
    this.burst = this.tokens = burst;
    this.perSecond = perSecond;
  }

  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Why a session ended ('close'): a protocol error of the peer's, not a failure of this side or the network. */
export class PeerProtocolError extends Error {}

/** An error of the peer's that ends the connection, with HTTP/2's code for it. */
class ConnectionError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

const EMPTY = Buffer.alloc(0);

function unpad(flags: number, payload: Buffer): Buffer {
  if (!(flags & PADDED)) return payload;
  const padding = payload[0] ?? 0;
  if (payload.length === 0 || padding >= payload.length) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than its frame");
  return payload.subarray(1, payload.length - padding);
}

/** The first `size` bytes a stream holds, taken off its queue (a view when one buffer has them). */
function take(stream: H2Stream, size: number): Buffer {
  stream.pendingBytes -= size;
  const parts: Buffer[] = [];
  for (let left = size; left > 0; ) {
    const head = stream.pending[0]!;
    if (head.length <= left) {
      parts.push(stream.pending.shift()!);
      left -= head.length;
    } else {
      parts.push(head.subarray(0, left));
      stream.pending[0] = head.subarray(left);
      left = 0;
    }
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
