// Connecting to core etcd: a TLS socket with ALPN h2 that reads straight into the HTTP/2 session
// (wire/h2.ts), and the header blocks of the gateway's calls.
import tls, { type ConnectionOptions } from "node:tls";
import { H2Session, type SessionOptions } from "../wire/h2.ts";
import { encodeHeaders } from "../wire/hpack.ts";

// What one socket read takes at most: a TLS record is at most 16 KiB, and several come at once.
const READ_BUFFER = 64 * 1024;

/**
 * Connects over TLS with ALPN h2 and starts a client session on the socket. Reads go to the
 * session from one buffer, with no stream in between: that machinery cost about a tenth of the
 * gateway's CPU per call.
 */
export function connectSession(options: ConnectionOptions, sessionOptions: SessionOptions, timeoutMs: number): Promise<H2Session> {
  return new Promise((resolve, reject) => {
    let session: H2Session | undefined;
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
      session = new H2Session(socket, "client", sessionOptions);
      for (const bytes of early) session.receive(bytes);
      resolve(session);
    });
  });
}

const fixedBlocks = new Map<string, Buffer>();

/** The header block of a gRPC call to `path` on `authority`, with `extra` headers (grpc-timeout, hasleader). */
export function callHeaderBlock(authority: string, path: string, extra: readonly (readonly [string, string])[]): Buffer {
  const key = `${authority} ${path}`;
  let fixed = fixedBlocks.get(key);
  if (!fixed) {
    fixed = encodeHeaders([[":method", "POST"], [":scheme", "https"], [":path", path], [":authority", authority], ["content-type", "application/grpc"], ["te", "trailers"]]);
    fixedBlocks.set(key, fixed);
  }
  return extra.length === 0 ? fixed : Buffer.concat([fixed, encodeHeaders(extra)]);
}
