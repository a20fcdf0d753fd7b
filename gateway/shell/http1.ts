// The least of HTTP/1.1 that the health port needs: the kubelet's probes and Prometheus's scrapes,
// each a GET without a body. One request per connection, answered with `Connection: close`.
// node:http would do, but importing it loads undici, zlib and worker_threads with it: 5.6 MiB of
// every idle gateway's memory (README: Sizing).
import net from "node:net";

export interface Answer {
  status: number;
  body: string;
  type?: string;
}

/** The request's method and target as sent (`/metrics`); its headers are not needed. */
export type Handler = (method: string, target: string) => Promise<Answer>;

const MAX_HEAD_BYTES = 16 * 1024;
const IDLE_TIMEOUT_MS = 10_000;
const REASONS: Record<number, string> = { 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable" };
const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/;

function write(socket: net.Socket, answer: Answer): void {
  const body = Buffer.from(answer.body);
  const head = `HTTP/1.1 ${answer.status} ${REASONS[answer.status] ?? "Unknown"}\r\ncontent-type: ${answer.type ?? "text/plain; charset=utf-8"}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  socket.end(Buffer.concat([Buffer.from(head, "latin1"), body]));
}

export function serveHttp1(host: string, port: number, handle: Handler): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on("error", () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1 ? head.length > MAX_HEAD_BYTES : end > MAX_HEAD_BYTES) {
        socket.off("data", onData);
        socket.resume();
        write(socket, { status: 431, body: "request head too large\n" });
        return;
      }
      if (end === -1) return;
      socket.off("data", onData);
      // What follows the head (a body, a pipelined request) is not read: the answer closes the connection.
      socket.resume();
      const line = REQUEST_LINE.exec(head.subarray(0, head.indexOf("\r\n")).toString("latin1"));
      if (!line) {
        write(socket, { status: 400, body: "not an HTTP/1.1 request\n" });
        return;
      }
      handle(line[1]!, line[2]!).then(
        (answer) => {
          if (!socket.destroyed) write(socket, answer);
        },
        () => {
          if (!socket.destroyed) write(socket, { status: 500, body: "internal error\n" });
        },
      );
    };
    socket.on("data", onData);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}
