// The Kubernetes API as a pod reaches it, as client-go's in-cluster configuration does: the
// address from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (the kubelet sets them in every
// container), the cluster's CA and the pod's service account token from mounted files. The token
// is read again for every call: the kubelet rotates a projected token in place.
import { readFileSync } from "node:fs";
import https from "node:https";
import { ConfigError } from "./flags.ts";

/** An answer of the API server other than 2xx: its code, and the Status message it gave. */
export class KubeApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const CALL_TIMEOUT_MS = 30_000;

export class KubeApi {
  private readonly agent: https.Agent;
  private readonly server: string;
  private readonly tokenFile: string;

  constructor(server: string, ca: Buffer, tokenFile: string) {
    this.server = server;
    this.tokenFile = tokenFile;
    this.agent = new https.Agent({ ca, keepAlive: true, maxSockets: 1 });
  }

  /** The in-cluster API server; a missing address, CA or token is a bad setting (exit 2). */
  static inCluster(env: NodeJS.ProcessEnv, caFile: string, tokenFile: string): KubeApi {
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT;
    if (!host || !port) throw new ConfigError("KUBERNETES_SERVICE_HOST", "and KUBERNETES_SERVICE_PORT must be set (the kubelet sets them in every pod): the schedule creates EtcdStorageBackups through the API server");
    let ca: Buffer;
    try {
      ca = readFileSync(caFile);
      readFileSync(tokenFile);
    } catch (error) {
      const { path, code } = error as NodeJS.ErrnoException;
      throw new ConfigError(path === tokenFile ? "--token-file" : "--kube-ca-file", `cannot read ${path}: ${code ?? (error as Error).message}`);
    }
    return new KubeApi(`https://${host.includes(":") ? `[${host}]` : host}:${port}`, ca, tokenFile);
  }

  /** One call; a body is sent as JSON; the answer is parsed JSON. */
  call<T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const token = readFileSync(this.tokenFile, "utf8").trim();
    return new Promise((resolve, reject) => {
      const request = https.request(
        `${this.server}${path}`,
        {
          method,
          agent: this.agent,
          timeout: CALL_TIMEOUT_MS,
          headers: { accept: "application/json", authorization: `Bearer ${token}`, ...(payload === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }) },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = response.statusCode ?? 0;
            let parsed: unknown;
            try {
              parsed = text === "" ? {} : JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            if (status >= 200 && status < 300 && parsed !== undefined) return resolve(parsed as T);
            const message = (parsed as { message?: unknown } | undefined)?.message;
            reject(new KubeApiError(status, `${method} ${path}: HTTP ${status}${typeof message === "string" ? `: ${message}` : ""}`));
          });
          response.on("error", reject);
        },
      );
      request.on("timeout", () => request.destroy(new Error(`${method} ${path}: no answer within ${CALL_TIMEOUT_MS / 1000} s`)));
      request.on("error", reject);
      request.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
