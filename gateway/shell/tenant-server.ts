// The tenant's endpoint: mutual TLS and the gateway's HTTP/2 (wire/h2.ts, server side) on one
// port. The client certificate is checked per call, not in the handshake, so that a client
// without a good one hears why (UNAUTHENTICATED) instead of a broken handshake.
import tls, { type TLSSocket } from "node:tls";
import type { Logger } from "../log.ts";
import { H2Session, PeerProtocolError, type H2Stream, type HeaderFields } from "../wire/h2.ts";
import { encodeHeaders } from "../wire/hpack.ts";
import type { KeyPairWithCa } from "./tls.ts";

// etcd puts no limit on concurrent streams; an API server multiplexes its calls on few connections.
const MAX_CONCURRENT_STREAMS = 1_000;
const STREAM_WINDOW = 4 * 1024 * 1024;
// What a tenant's paused streams can make one connection hold (h2.ts: a server holds the
// connection's window for them).
const SESSION_WINDOW = 16 * 1024 * 1024;
const NOT_GRPC = encodeHeaders([[":status", "415"]]);

/** A call: `refusal` says why the connection's certificate is not good enough, when it is not. */
export type CallHandler = (stream: H2Stream, headers: HeaderFields, refusal: string | undefined) => void;

export class TenantServer {
  readonly sessions = new Set<H2Session>();
  private readonly server: tls.Server;

  constructor(material: KeyPairWithCa, onCall: CallHandler, log: Logger) {
    this.server = tls.createServer({
      ...material,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.2",
      ALPNProtocols: ["h2"],
    });
    this.server.on("secureConnection", (socket: TLSSocket) => {
      if (socket.alpnProtocol !== "h2") {
        socket.destroy();
        return;
      }
      // Small gRPC frames go out at once: Nagle's algorithm would hold them for the peer's ACK.
      socket.setNoDelay(true);
      const session = new H2Session(socket, "server", { streamWindow: STREAM_WINDOW, sessionWindow: SESSION_WINDOW, peer: "the tenant", maxConcurrentStreams: MAX_CONCURRENT_STREAMS });
      // OpenSSL reports a missing certificate as UNABLE_TO_GET_ISSUER_CERT too; an empty peer certificate tells them apart.
      const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
      const refusal = socket.authorized ? undefined : `a client certificate issued by this tenant's client CA is required (${presented ? socket.authorizationError : "none presented"})`;
      this.sessions.add(session);
      session.on("close", (error?: Error) => {
        this.sessions.delete(session);
        // A tenant's broken connection is its own affair; its protocol errors are worth a line
        // (at debug level from a client without a good certificate: anyone who reaches the port).
        if (error instanceof PeerProtocolError) log[refusal ? "debug" : "info"]({ err: error.message }, "tenant connection ended");
      });
      session.on("stream", (stream: H2Stream, headers: HeaderFields) => {
        if (headers[":method"] !== "POST" || !String(headers["content-type"] ?? "").startsWith("application/grpc")) {
          stream.respond(NOT_GRPC, true);
          return;
        }
        onCall(stream, headers, refusal);
      });
      socket.on("data", (chunk: Buffer) => session.receive(chunk));
    });
    this.server.on("tlsClientError", (error) => log.debug({ err: error.message }, "TLS handshake failed"));
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => resolve());
    });
  }

  /** New serving credentials, for the next handshakes. */
  setSecureContext(material: KeyPairWithCa): void {
    this.server.setSecureContext({ ...material });
  }

  /** No new connections; the open ones get GOAWAY and end once their calls did. */
  close(): void {
    this.server.close();
    for (const session of this.sessions) session.close();
  }

  destroy(): void {
    for (const session of this.sessions) session.destroy();
  }
}
