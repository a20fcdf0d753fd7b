// The HTTP/2 client the gateway speaks to core etcd with: only what gRPC over TLS needs (RFC 9113:
// one connection's streams, flow control both ways, SETTINGS, PING, GOAWAY, RST_STREAM), written
// for the gateway's load. Node's own client kept two stream objects per call that only a full
// garbage collection frees, and its session.request() alone was a seventh of the gateway's busy
// CPU; here a call is one small object, and its frames go out in one write.
import { EventEmitter } from "node:events";
import tls, { type ConnectionOptions, type TLSSocket } from "node:tls";
import { HeaderDecoder, encodeHeaders } from "./hpack.ts";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME_HEADER = 9;
const FrameType = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PUSH_PROMISE: 0x5, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8, CONTINUATION: 0x9 } as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const Setting = { ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5 } as const;
const NO_ERROR = 0x0;
const CANCEL = 0x8;
// Frames this side accepts: HTTP/2's default, announced by not changing it.
const MAX_RECEIVED_FRAME = 16_384;
const DEFAULT_WINDOW = 65_535;
// A header block larger than this ends the connection: gRPC's are a few hundred bytes.
const MAX_HEADER_BLOCK = 1024 * 1024;
const MAX_STREAM_ID = 2 ** 31 - 1;

export type HeaderFields = Record<string, string>;

export interface SessionOptions {
  /** The window each stream offers core etcd (its answers in flight). */
  streamWindow: number;
  /** The window of the whole connection. */
  sessionWindow: number;
}

/**
 * One call on a session. Events: 'response' (the first header block), 'data' (DATA payloads, in
 * order), 'trailers', 'end' (core etcd ended its side), 'close' (the stream is gone: after 'end',
 * or reset, or the connection lost), 'drain' (what write() held went out).
 */
export class CoreStream extends EventEmitter {
  id = 0;
  closed = false;
  private readonly session: CoreSession;
  /** Bytes to send, and whether the tenant's side ends after them. */
  readonly pending: Buffer[] = [];
  pendingBytes = 0;
  ending = false;
  endSent = false;
  /** Core etcd's window for this stream, set when the stream starts. */
  sendWindow = 0;
  /** Bytes of the DATA frame being received. */
  received = 0;
  /** Bytes received and consumed but not yet given back to core etcd as window. */
  unacknowledged = 0;
  paused = false;
  /** write() answered false: 'drain' is owed once what it holds went out. */
  needsDrain = false;
  gotHeaders = false;
  readonly headerBlock: Buffer;

  constructor(session: CoreSession, headerBlock: Buffer) {
    super();
    this.session = session;
    this.headerBlock = headerBlock;
  }

  /** Queues a message; false when it waits for core etcd's window ('drain' follows). */
  write(data: Buffer): boolean {
    if (this.closed || this.ending) return false;
    this.hold(data);
    this.session.send(this);
    this.needsDrain = this.pendingBytes > 0;
    return !this.needsDrain;
  }

  /** Ends the gateway's side, after `data` if given. */
  end(data?: Buffer): void {
    if (this.closed || this.ending) return;
    if (data) this.hold(data);
    this.ending = true;
    this.session.send(this);
  }

  private hold(data: Buffer): void {
    if (data.length === 0) return;
    this.pending.push(data);
    this.pendingBytes += data.length;
  }

  /** Resets the stream (CANCEL by default); 'close' follows. */
  close(code: number = CANCEL): void {
    this.session.reset(this, code);
  }

  /** Stops giving core etcd window for this stream: its answers stop once what is in flight came. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.session.acknowledge(this, 0);
  }
}

/**
 * One connection to core etcd over an established TLS socket (ALPN h2). Events: 'goaway' (no new
 * streams; the ones core etcd took go on), 'close' (the connection is gone, with an Error when it
 * failed).
 */
export class CoreSession extends EventEmitter {
  closed = false;
  destroyed = false;
  private readonly socket: TLSSocket;
  private readonly options: SessionOptions;
  private readonly authority: string;
  private readonly streams = new Map<number, CoreStream>();
  /** Streams opened while core etcd's MAX_CONCURRENT_STREAMS were in use, in order. */
  private readonly waiting: CoreStream[] = [];
  /** Streams holding data while a window is closed, in order. */
  private readonly blocked = new Set<CoreStream>();
  private nextId = 1;
  private readonly decoder = new HeaderDecoder();
  private readonly headerBlocks = new Map<string, Buffer>();
  // Core etcd's settings: HTTP/2's defaults until its SETTINGS frame came.
  private peerMaxStreams = Infinity;
  private peerStreamWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16_384;
  private sendWindow = DEFAULT_WINDOW;
  /** Connection-level bytes received and not yet given back. */
  private unacknowledged = 0;
  /** The frame being received, and a frame header split over socket reads. */
  private current: { type: number; flags: number; id: number; left: number; parts: Buffer[]; streamed: boolean } | undefined;
  private readonly partialHeader = Buffer.alloc(FRAME_HEADER);
  private headerFill = 0;
  /** A header block split over HEADERS and CONTINUATION frames. */
  private continued: { id: number; flags: number; parts: Buffer[]; bytes: number } | undefined;
  private readonly out: Buffer[] = [];
  private flushing = false;
  private readonly pings = new Map<string, (error: Error | null) => void>();
  private pingCount = 0;

  constructor(socket: TLSSocket, authority: string, options: SessionOptions) {
    super();
    this.socket = socket;
    this.authority = authority;
    this.options = options;
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(Setting.ENABLE_PUSH, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(Setting.INITIAL_WINDOW_SIZE, 6);
    settings.writeUInt32BE(options.streamWindow, 8);
    this.queue(PREFACE);
    this.frame(FrameType.SETTINGS, 0, 0, settings);
    this.windowUpdate(0, options.sessionWindow - DEFAULT_WINDOW);
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => this.destroy(new Error("core etcd closed the connection")));
  }

  /** Whether new streams may be opened (not after close(), GOAWAY or destroy()). */
  get usable(): boolean {
    return !this.closed;
  }

  /** Streams open or waiting to start: the calls in flight. */
  get openStreams(): number {
    return this.streams.size + this.waiting.length;
  }

  /** Opens a gRPC call: POST `path` with `extra` headers. */
  request(path: string, extra: readonly (readonly [string, string])[]): CoreStream {
    const stream = new CoreStream(this, this.headerBlock(path, extra));
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
    if (this.destroyed) return process.nextTick(callback, new Error("the connection to core etcd closed"));
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(++this.pingCount, 4);
    this.pings.set(payload.toString("latin1"), callback);
    this.frame(FrameType.PING, 0, 0, payload);
  }

  /** No new streams; the connection ends once the open ones did. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.waiting.splice(0)) this.finish(stream);
    this.endIfIdle();
  }

  /** Ends the connection at once: open streams close without an answer. */
  destroy(error?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closed = true;
    this.socket.destroy();
    for (const stream of [...this.streams.values(), ...this.waiting]) this.finish(stream);
    this.streams.clear();
    this.waiting.length = 0;
    for (const callback of this.pings.values()) callback(new Error("the connection to core etcd closed"));
    this.pings.clear();
    this.emit("close", error);
  }

  /** Sends what a stream holds, as far as both windows allow. */
  send(stream: CoreStream): void {
    if (stream.id === 0 || stream.closed || stream.endSent) return;
    while (stream.pendingBytes > 0) {
      const size = Math.min(stream.pendingBytes, stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (size <= 0) {
        this.blocked.add(stream);
        return;
      }
      const payload = take(stream, size);
      stream.sendWindow -= size;
      this.sendWindow -= size;
      stream.endSent = stream.ending && stream.pendingBytes === 0;
      this.frame(FrameType.DATA, stream.endSent ? END_STREAM : 0, stream.id, payload);
    }
    if (stream.ending && !stream.endSent) {
      stream.endSent = true;
      this.frame(FrameType.DATA, END_STREAM, stream.id, EMPTY);
    }
    this.blocked.delete(stream);
    // Also for a stream that was written to while it waited to start.
    if (stream.needsDrain) {
      stream.needsDrain = false;
      stream.emit("drain");
    }
  }

  /** Resets a stream the gateway no longer wants. */
  reset(stream: CoreStream, code: number): void {
    if (stream.closed) return;
    if (stream.id !== 0) {
      const payload = Buffer.alloc(4);
      payload.writeUInt32BE(code, 0);
      this.frame(FrameType.RST_STREAM, 0, stream.id, payload);
    }
    this.finish(stream);
  }

  /** Gives core etcd back the window a stream's consumed data took (at once unless paused). */
  acknowledge(stream: CoreStream, bytes: number): void {
    stream.unacknowledged += bytes;
    if (stream.paused || stream.closed || stream.unacknowledged === 0) return;
    // In steps of a quarter window, one WINDOW_UPDATE per few frames; all at once on resume().
    if (bytes === 0 || stream.unacknowledged >= this.options.streamWindow / 4) {
      this.windowUpdate(stream.id, stream.unacknowledged);
      stream.unacknowledged = 0;
    }
  }

  private start(stream: CoreStream): void {
    if (this.nextId > MAX_STREAM_ID) {
      // Stream ids are spent: this connection takes no more, the next one will.
      this.emit("goaway");
      process.nextTick(() => this.finish(stream));
      this.close();
      return;
    }
    stream.id = this.nextId;
    stream.sendWindow = this.peerStreamWindow;
    this.nextId += 2;
    this.streams.set(stream.id, stream);
    this.frame(FrameType.HEADERS, END_HEADERS, stream.id, stream.headerBlock);
    this.send(stream);
  }

  private headerBlock(path: string, extra: readonly (readonly [string, string])[]): Buffer {
    let fixed = this.headerBlocks.get(path);
    if (!fixed) {
      fixed = encodeHeaders([[":method", "POST"], [":scheme", "https"], [":path", path], [":authority", this.authority], ["content-type", "application/grpc"], ["te", "trailers"]]);
      this.headerBlocks.set(path, fixed);
    }
    return extra.length === 0 ? fixed : Buffer.concat([fixed, encodeHeaders(extra)]);
  }

  private finish(stream: CoreStream): void {
    if (stream.closed) return;
    stream.closed = true;
    this.blocked.delete(stream);
    if (stream.id !== 0) this.streams.delete(stream.id);
    else if (this.waiting.includes(stream)) this.waiting.splice(this.waiting.indexOf(stream), 1);
    stream.emit("close");
    const next = this.usable ? this.waiting.shift() : undefined;
    if (next) this.start(next);
    this.endIfIdle();
  }

  private endIfIdle(): void {
    if (!this.closed || this.destroyed || this.streams.size > 0 || this.socket.writableEnded) return;
    const goaway = Buffer.alloc(8);
    goaway.writeUInt32BE(0, 0);
    goaway.writeUInt32BE(NO_ERROR, 4);
    this.frame(FrameType.GOAWAY, 0, 0, goaway);
    this.flush();
    this.socket.end();
  }

  /**
   * Parses frames as the socket delivers them. `chunk` is only valid during the call (the socket
   * reads into one buffer): what outlives it is copied. A DATA frame's payload is handed on piece
   * by piece as it arrives, never joined: a list page's frames span TLS records.
   */
  receive(chunk: Buffer): void {
    let at = 0;
    try {
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
          const length = header.readUIntBE(0, 3);
          if (length > MAX_RECEIVED_FRAME) throw new ProtocolError(`a frame of ${length} bytes, above the ${MAX_RECEIVED_FRAME} this side takes`);
          const type = header[3]!;
          const flags = header[4]!;
          current = { type, flags, id: header.readUInt32BE(5) & 0x7fffffff, left: length, parts: [], streamed: type === FrameType.DATA && !(flags & PADDED) };
          if (this.continued && type !== FrameType.CONTINUATION) throw new ProtocolError("a header block was interrupted");
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
      this.destroy(error as Error);
    }
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
        let block = unpad(flags, payload);
        if (flags & PRIORITY) block = block.subarray(5);
        if (flags & END_HEADERS) return this.onHeaders(id, flags, block);
        this.continued = { id, flags, parts: [Buffer.from(block)], bytes: block.length };
        return;
      }
      case FrameType.CONTINUATION: {
        if (!this.continued || this.continued.id !== id) throw new ProtocolError("a CONTINUATION frame without its HEADERS");
        this.continued.parts.push(Buffer.from(payload));
        this.continued.bytes += payload.length;
        if (this.continued.bytes > MAX_HEADER_BLOCK) throw new ProtocolError(`a header block of more than ${MAX_HEADER_BLOCK} bytes`);
        if (!(flags & END_HEADERS)) return;
        const { flags: first, parts } = this.continued;
        this.continued = undefined;
        return this.onHeaders(id, first, Buffer.concat(parts));
      }
      case FrameType.RST_STREAM: {
        const stream = this.streams.get(id);
        if (stream) this.finish(stream);
        return;
      }
      case FrameType.SETTINGS:
        if (flags & ACK) return;
        return this.onSettings(payload);
      case FrameType.PING: {
        if (!(flags & ACK)) return this.frame(FrameType.PING, ACK, 0, Buffer.from(payload));
        const key = payload.toString("latin1");
        const callback = this.pings.get(key);
        this.pings.delete(key);
        callback?.(null);
        return;
      }
      case FrameType.GOAWAY: {
        const lastId = payload.readUInt32BE(0) & 0x7fffffff;
        this.closed = true;
        // Streams core etcd never took are refused: a read among them may be sent again.
        for (const stream of [...this.streams.values()]) if (stream.id > lastId) this.finish(stream);
        for (const stream of this.waiting.splice(0)) this.finish(stream);
        this.emit("goaway");
        this.endIfIdle();
        return;
      }
      case FrameType.WINDOW_UPDATE: {
        const increment = payload.readUInt32BE(0) & 0x7fffffff;
        if (id === 0) {
          this.sendWindow += increment;
          for (const stream of [...this.blocked]) this.send(stream);
        } else {
          const stream = this.streams.get(id);
          if (!stream) return;
          stream.sendWindow += increment;
          this.send(stream);
        }
        return;
      }
      case FrameType.PUSH_PROMISE:
        throw new ProtocolError("core etcd pushed a stream, which this side turned off");
      default:
        return; // PRIORITY and unknown frame types are ignored (RFC 9113 5.5).
    }
  }

  /** Part of a DATA frame's payload (`padding`: bytes of the frame that carry none). */
  private onDataPiece(id: number, data: Buffer, padding = 0): void {
    const counted = data.length + padding;
    this.unacknowledged += counted;
    if (this.unacknowledged >= this.options.sessionWindow / 4) {
      this.windowUpdate(0, this.unacknowledged);
      this.unacknowledged = 0;
    }
    const stream = this.streams.get(id);
    if (!stream) return; // reset by this side while core etcd was still sending
    if (data.length > 0) stream.emit("data", Buffer.from(data));
    stream.received += counted;
  }

  private onDataEnd(flags: number, id: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    const received = stream.received;
    stream.received = 0;
    if (flags & END_STREAM) this.ended(stream);
    else if (!stream.closed) this.acknowledge(stream, received);
  }

  private onHeaders(id: number, flags: number, block: Buffer): void {
    // Decoded even for a stream that is gone: the table must follow every block.
    const fields = this.decoder.decode(block);
    const stream = this.streams.get(id);
    if (!stream) return;
    if (!stream.gotHeaders) {
      stream.gotHeaders = true;
      stream.emit("response", fields);
    } else {
      stream.emit("trailers", fields);
    }
    if (flags & END_STREAM) this.ended(stream);
  }

  private ended(stream: CoreStream): void {
    if (stream.closed) return;
    stream.emit("end");
    // Core etcd answered in full: a side still sending is cut (gRPC's server ends with its status).
    if (!stream.endSent) this.reset(stream, NO_ERROR);
    else this.finish(stream);
  }

  private onSettings(payload: Buffer): void {
    for (let at = 0; at + 6 <= payload.length; at += 6) {
      const value = payload.readUInt32BE(at + 2);
      switch (payload.readUInt16BE(at)) {
        case Setting.MAX_CONCURRENT_STREAMS:
          this.peerMaxStreams = value;
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > 2 ** 31 - 1) throw new ProtocolError("a stream window above 2^31-1");
          const delta = value - this.peerStreamWindow;
          this.peerStreamWindow = value;
          for (const stream of this.streams.values()) stream.sendWindow += delta;
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          this.peerMaxFrame = value;
          break;
      }
    }
    this.frame(FrameType.SETTINGS, ACK, 0, EMPTY);
    for (const stream of [...this.blocked]) this.send(stream);
    while (this.waiting.length > 0 && this.streams.size < this.peerMaxStreams) this.start(this.waiting.shift()!);
  }

  private windowUpdate(id: number, increment: number): void {
    if (increment <= 0) return;
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
    if (this.destroyed) return;
    this.out.push(bytes);
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  // Not held back for the socket: what the gateway sends core etcd is bounded by its limits (calls
  // and streams in flight, each within the request size).
  private flush(): void {
    this.flushing = false;
    if (this.out.length === 0 || this.destroyed) return;
    const bytes = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
    this.out.length = 0;
    this.socket.write(bytes);
  }
}

// What one socket read takes at most: a TLS record is at most 16 KiB, and several come at once.
const READ_BUFFER = 64 * 1024;

/**
 * Connects over TLS with ALPN h2 and starts a session on the socket. Reads go to the session from
 * one buffer, with no stream in between: that machinery cost about a tenth of the gateway's CPU
 * per call.
 */
export function connectSession(options: ConnectionOptions, authority: string, sessionOptions: SessionOptions, timeoutMs: number): Promise<CoreSession> {
  return new Promise((resolve, reject) => {
    let session: CoreSession | undefined;
    // Bytes that came with the handshake, before the session exists.
    const early: Buffer[] = [];
    const onread = (length: number, buffer: Buffer) => {
      const bytes = buffer.subarray(0, length);
      if (session) session.receive(bytes);
      else early.push(Buffer.from(bytes));
      return true;
    };
    const socket = tls.connect({ ...options, ALPNProtocols: ["h2"], onread: { buffer: Buffer.allocUnsafe(READ_BUFFER), callback: onread } } as ConnectionOptions);
    // Small gRPC frames go out at once: Nagle's algorithm would hold them for the peer's ACK.
    socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS session within ${timeoutMs} ms`)), timeoutMs);
    const failed = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    socket.once("error", failed);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.off("error", failed);
      if (socket.alpnProtocol !== "h2") {
        socket.destroy();
        reject(new Error(`the endpoint does not speak HTTP/2 (ALPN: ${socket.alpnProtocol || "none"})`));
        return;
      }
      session = new CoreSession(socket, authority, sessionOptions);
      for (const bytes of early) session.receive(bytes);
      resolve(session);
    });
  });
}

class ProtocolError extends Error {
  constructor(message: string) {
    super(`HTTP/2 protocol error from core etcd: ${message}`);
  }
}

const EMPTY = Buffer.alloc(0);

function unpad(flags: number, payload: Buffer): Buffer {
  if (!(flags & PADDED)) return payload;
  const padding = payload[0]!;
  if (padding >= payload.length) throw new ProtocolError("padding longer than its frame");
  return payload.subarray(1, payload.length - padding);
}

/** The first `size` bytes a stream holds, taken off its queue (a view when one buffer has them). */
function take(stream: CoreStream, size: number): Buffer {
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
