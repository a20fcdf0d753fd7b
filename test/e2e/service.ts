// A Service's address in front of several pods, as kube-proxy gives it: each new TCP connection
// goes to the next ready endpoint in turn; a connection whose endpoint goes away is closed (its
// client reconnects, and lands on another). The endpoints are set by the test, as the endpoints
// controller would from the pods' readiness.
import net from "node:net";
import { freePort, onCleanup } from "./harness.ts";

export interface LocalService {
  port: number;
  /** The ready endpoints' local ports. */
  setEndpoints(ports: readonly number[]): void;
  /** Connections accepted so far, by endpoint port. */
  connections(): Map<number, number>;
}

export async function startService(endpoints: readonly number[]): Promise<LocalService> {
  let ready = [...endpoints];
  let next = 0;
  const counts = new Map<number, number>();
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    open.add(client);
    client.on("close", () => open.delete(client));
    if (ready.length === 0) {
      client.destroy();
      return;
    }
    const port = ready[next++ % ready.length]!;
    counts.set(port, (counts.get(port) ?? 0) + 1);
    const upstream = net.connect({ host: "127.0.0.1", port });
    open.add(upstream);
    upstream.on("close", () => open.delete(upstream));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  onCleanup(async () => {
    for (const socket of open) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port,
    setEndpoints: (ports) => {
      ready = [...ports];
    },
    connections: () => new Map(counts),
  };
}
