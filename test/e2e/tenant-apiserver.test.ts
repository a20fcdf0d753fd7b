// A tenant kube-apiserver (the real one, from the pinned k8s.io/kubernetes) storing through its
// gateway under a real client's load, while the gateway's replicas fail and roll and the host
// compacts core etcd underneath. Two replicas of the gateway, each from exactly the returned
// Deployment, stand behind one address as the Service gives them (test/e2e/service.ts).
//
// The load is a client of the API server's REST API (lists with and without resourceVersion,
// paged; watches, one of them a WatchList with sendInitialEvents; creates of ConfigMaps, Secrets
// and Events in several namespaces), written here rather than with client-go so that every
// resourceVersion it sees can be checked. Compaction is done on core etcd directly, as the host's
// own API server does every 5 minutes.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type EtcdClient, type KeyValue } from "../support/etcd-client.ts";
import { testConfig } from "../support/requests.ts";
import { everyKey } from "./gateway-kit.ts";
import { startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";
import { KubeError, startKubeApiserver, type KubeApi, type KubeObject, type RunningKubeApiserver } from "./kube.ts";
import { startService, type LocalService } from "./service.ts";
import { startProxy, startTenant, type RunningProxy, type RunningTenant } from "./tenant.ts";

const TENANT = "kas";
const PREFIX = `/etcdstorage/${TENANT}/`;
const NAMESPACES = ["team-a", "team-b", "team-c", "team-d"];
const PER_KIND = 800;
const KINDS = ["configmaps", "secrets", "events"] as const;
type Kind = (typeof KINDS)[number];
const CONCURRENCY = 12;

const text = (bytes: Buffer | Uint8Array) => Buffer.from(bytes).toString("latin1");

function body(kind: Kind, namespace: string, name: string): object {
  const metadata = { name, namespace };
  switch (kind) {
    case "configmaps":
      return { apiVersion: "v1", kind: "ConfigMap", metadata, data: { value: name.repeat(8) } };
    case "secrets":
      return { apiVersion: "v1", kind: "Secret", metadata, stringData: { token: name } };
    case "events":
      return { apiVersion: "v1", kind: "Event", metadata, involvedObject: { kind: "ConfigMap", namespace, name }, reason: "Load", message: `event ${name}`, type: "Normal" };
  }
}

/**
 * A watcher as a careful client keeps one: a mirror of a resource's objects, fed by a watch from
 * a list's resourceVersion (or, with `watchList`, by the watch's own initial events); every event's
 * resourceVersion must be above the last; "too old" (410) means relisting in full.
 */
class Mirror {
  readonly items = new Map<string, string>();
  readonly violations: string[] = [];
  relists = 0;
  rewatches = 0;
  private lastRv = 0n;
  private stopped = false;
  private current?: { close(): void };
  private readonly done: Promise<void>;

  readonly resource: Kind;
  readonly watchList: boolean;

  /** `startAt`: watch first from that resourceVersion, without a list (a client resuming after a long pause). */
  constructor(api: KubeApi, resource: Kind, watchList: boolean, startAt?: string) {
    this.resource = resource;
    this.watchList = watchList;
    if (startAt !== undefined) this.lastRv = BigInt(startAt);
    this.done = this.run(api, startAt === undefined);
  }

  private collection(): string {
    return `/api/v1/${this.resource}`;
  }

  private async relist(api: KubeApi): Promise<void> {
    this.items.clear();
    let cont = "";
    let rv = "";
    do {
      const page = await api.call<{ metadata: { resourceVersion: string; continue?: string }; items: KubeObject[] }>("GET", `${this.collection()}?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ""}`);
      for (const item of page.items) this.items.set(`${item.metadata.namespace}/${item.metadata.name}`, item.metadata.resourceVersion!);
      rv = page.metadata.resourceVersion;
      cont = page.metadata.continue ?? "";
    } while (cont !== "");
    this.lastRv = BigInt(rv);
  }

  private async run(api: KubeApi, listFirst: boolean): Promise<void> {
    let needList = listFirst && !this.watchList;
    let initial = this.watchList;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.relist(api);
          needList = false;
        }
        const query = initial
          ? "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
          : `watch=1&allowWatchBookmarks=true&resourceVersion=${this.lastRv}`;
        const watch = api.watch(`${this.collection()}?${query}`);
        this.current = watch;
        for (;;) {
          const event = await watch.next(60_000);
          const rv = BigInt(event.object.metadata.resourceVersion ?? "0");
          if (event.type === "ERROR") {
            const status = event.object as unknown as { code?: number };
            if (status.code === 410) {
              needList = true;
              initial = this.watchList;
              this.relists++;
              if (initial) this.items.clear();
            }
            watch.close();
            break;
          }
          if (event.type === "BOOKMARK") {
            if (rv < this.lastRv) this.violations.push(`${this.resource}: bookmark ${rv} after ${this.lastRv}`);
            this.lastRv = rv;
            if (event.object.metadata.annotations?.["k8s.io/initial-events-end"] === "true") initial = false;
            continue;
          }
          // Initial events of a WatchList come in any order of resourceVersion; after them, strictly increasing.
          if (!initial && rv <= this.lastRv) this.violations.push(`${this.resource}: ${event.type} ${event.object.metadata.name} at ${rv} after ${this.lastRv}`);
          if (!initial) this.lastRv = rv;
          const key = `${event.object.metadata.namespace}/${event.object.metadata.name}`;
          if (event.type === "DELETED") this.items.delete(key);
          else this.items.set(key, event.object.metadata.resourceVersion!);
        }
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof KubeError && error.status === 410) {
          needList = true;
          this.relists++;
        }
        // The watch ended (its connection, or the API server's own timeout): resume from the last
        // resourceVersion seen, as a reflector does.
        this.rewatches++;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.close();
    await this.done;
  }
}

async function listAll(api: KubeApi, resource: Kind): Promise<KubeObject[]> {
  const items: KubeObject[] = [];
  let cont = "";
  do {
    const page = await api.call<{ metadata: { continue?: string }; items: KubeObject[] }>("GET", `/api/v1/${resource}?limit=300${cont ? `&continue=${encodeURIComponent(cont)}` : ""}`);
    items.push(...page.items);
    cont = page.metadata.continue ?? "";
  } while (cont !== "");
  return items;
}

/** Creates one object, retrying what a fault interrupts; AlreadyExists after a retry means an earlier try succeeded. */
async function create(api: KubeApi, kind: Kind, namespace: string, name: string): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      await api.call("POST", `/api/v1/namespaces/${namespace}/${kind}`, body(kind, namespace, name));
      return attempt;
    } catch (error) {
      if (error instanceof KubeError && error.status === 409 && attempt > 1) return attempt;
      if (error instanceof KubeError && error.status < 500 && error.status !== 429) throw error;
      if (attempt >= 30) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

describe("a tenant kube-apiserver through two gateway replicas, under load, with a replica killed, one rolled and core compacted", () => {
  let dir: string;
  let core: CoreEtcd;
  let host: EtcdClient;
  let tenant: RunningTenant;
  let service: LocalService;
  let kube: RunningKubeApiserver;
  let outsideBefore: KeyValue[];
  const replicas: RunningProxy[] = [];

  before(async () => {
    dir = await tempDir("tenant-apiserver-");
    core = await startCoreEtcd(path.join(dir, "core"));
    host = connect(core.endpoint, { ...core.tls, servername: "localhost" });
    for (const key of ["/registry/host/key", "/etcdstorage/kas-other/x", "/etcdstorage/kasx"]) await host.kv.put({ key, value: `host ${key}` });
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
    tenant = await startTenant(config, core, TENANT, { clientCertSecret: [{ name: "etcd-client", namespace: `${TENANT}-system` }], quota }, path.join(dir, "replica-a"));
    replicas.push(tenant.proxy, await startProxy(config, tenant.request, tenant.response, path.join(dir, "replica-b")));
    service = await startService(replicas.map((r) => r.clientPort));
    outsideBefore = (await everyKey(host)).filter((kv) => !text(kv.key).startsWith(PREFIX));
    kube = await startKubeApiserver(path.join(dir, "kube"), { servers: `https://127.0.0.1:${service.port}`, caFile: tenant.credentials.cacert, certFile: tenant.credentials.cert, keyFile: tenant.credentials.key }, ["--etcd-compaction-interval=0"]);
    for (const name of NAMESPACES) await kube.api.call("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
  });

  after(async () => {
    host?.close();
    kube?.api.close();
    await stopAll();
  });

  test("every object created is listed exactly once; no watcher misses or repeats an event; /readyz recovers; nothing outside the prefix changes", async () => {
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    const mirrors = [...KINDS.map((kind) => new Mirror(kube.api, kind, false)), new Mirror(kube.api, "configmaps", true)];
    const work = KINDS.flatMap((kind) => Array.from({ length: PER_KIND }, (_, i) => ({ kind, namespace: NAMESPACES[i % NAMESPACES.length]!, name: `${kind.slice(0, -1)}-${i}` })));
    // Interleaved, so that every kind is written throughout.
    work.sort((a, b) => Number(a.name.split("-").pop()) - Number(b.name.split("-").pop()) || a.kind.localeCompare(b.kind));
    const total = work.length;
    let done = 0;
    let retried = 0;
    const listTimings: Record<string, number[]> = { consistent: [], cached: [], paged: [] };
    const faults: string[] = [];

    const compact = async () => {
      const revision = (await host.kv.range({ key: "/registry/host/key" })).header!.revision;
      await host.kv.compact({ revision });
      faults.push(`compacted core at ${revision}`);
    };
    const killReplica = async () => {
      const lost = replicas.shift()!;
      service.setEndpoints(replicas.map((r) => r.clientPort));
      lost.gateway.process.kill("SIGKILL");
      await lost.gateway.exited;
      replicas.push(await startProxy(config, tenant.request, tenant.response, path.join(dir, "replica-c")));
      service.setEndpoints(replicas.map((r) => r.clientPort));
      faults.push("replica killed and replaced");
    };
    const rollReplica = async () => {
      const next = await startProxy(config, tenant.request, tenant.response, path.join(dir, "replica-d"));
      const old = replicas.shift()!;
      replicas.push(next);
      service.setEndpoints(replicas.map((r) => r.clientPort));
      await old.gateway.stop();
      faults.push("replica rolled");
    };
    const lister = (async () => {
      while (done < total) {
        for (const [what, query] of [["consistent", ""], ["cached", "?resourceVersion=0"], ["paged", "?limit=200"]] as const) {
          const started = performance.now();
          await kube.api.call("GET", `/api/v1/configmaps${query}`).catch(() => undefined);
          listTimings[what]!.push(performance.now() - started);
        }
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    })();
    const schedule = [
      { at: Math.floor(total / 4), run: compact },
      { at: Math.floor(total / 3), run: killReplica },
      { at: Math.floor(total / 2), run: compact },
      { at: Math.floor((2 * total) / 3), run: rollReplica },
      { at: Math.floor((5 * total) / 6), run: compact },
    ];
    const faultsRun = (async () => {
      for (const fault of schedule) {
        await waitFor(`${fault.at} objects created`, async () => done >= fault.at, 120_000);
        await fault.run();
      }
    })();
    let nextItem = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (nextItem < total) {
          const item = work[nextItem++]!;
          if ((await create(kube.api, item.kind, item.namespace, item.name)) > 1) retried++;
          done++;
        }
      }),
    );
    await faultsRun;
    await lister;
    assert.deepEqual(faults.length, schedule.length);

    // The API server recovers by itself.
    await waitFor("tenant kube-apiserver /readyz", async () => (await kube.api.request("GET", "/readyz")).status === 200, 30_000);

    for (const kind of KINDS) {
      const names = (await listAll(kube.api, kind)).filter((o) => NAMESPACES.includes(o.metadata.namespace!)).map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
      assert.equal(new Set(names).size, names.length, `${kind}: no object listed twice`);
      const expected = work.filter((w) => w.kind === kind).map((w) => `${w.namespace}/${w.name}`);
      assert.deepEqual([...names].sort(), expected.sort(), `${kind}: every object created is listed`);
    }
    // Every watcher converges on the final list, having seen every resourceVersion in order.
    for (const mirror of mirrors) {
      const final = new Map((await listAll(kube.api, mirror.resource)).map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o.metadata.resourceVersion!]));
      await waitFor(`${mirror.resource} watcher${mirror.watchList ? " (WatchList)" : ""} to converge`, async () => mirror.items.size === final.size && [...final].every(([key, rv]) => mirror.items.get(key) === rv), 30_000, () => `mirror ${mirror.items.size}, list ${final.size}`);
      assert.deepEqual(mirror.violations, [], `${mirror.resource}: resourceVersions strictly increase`);
    }
    // A client that resumes from a resourceVersion compacted away gets "too old" and relists in full.
    const resumed = new Mirror(kube.api, "configmaps", false, "2");
    const final = (await listAll(kube.api, "configmaps")).length;
    await waitFor("the resumed watcher to relist", async () => resumed.relists >= 1 && resumed.items.size === final, 30_000);
    mirrors.push(resumed);
    await Promise.all(mirrors.map((m) => m.stop()));

    const outsideAfter = (await everyKey(host)).filter((kv) => !text(kv.key).startsWith(PREFIX));
    assert.deepEqual(outsideAfter, outsideBefore, "every core key outside the prefix is byte-identical");
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;
    // Not asserted (a test is no benchmark): what the run saw, for whoever reads a failure.
    process.stderr.write(`[tenant-apiserver] ${total} creates (${retried} retried), ${faults.join("; ")}; relists ${mirrors.map((m) => m.relists).join("/")}, rewatches ${mirrors.map((m) => m.rewatches).join("/")}; list medians ms ${Object.entries(listTimings).map(([k, v]) => `${k} ${median(v).toFixed(0)}`).join(", ")}; connections ${JSON.stringify([...service.connections()])}\n`);
  });

  test("the gateway answered every progress request: no consistent list waited for the 3 s fallback", async () => {
    const metrics = await kube.api.request<string>("GET", "/metrics");
    const reads = metrics.body.split("\n").filter((line) => line.startsWith('apiserver_watch_cache_consistent_read_total{') && line.includes('resource="configmaps"'));
    const sum = (fallback: boolean) => reads.filter((line) => line.includes(`fallback="${fallback}"`)).reduce((total, line) => total + Number(line.split(" ").pop()), 0);
    assert.ok(sum(false) > 10, `consistent lists of ConfigMaps were served from the watch cache: ${reads.join("\n")}`);
    assert.equal(sum(true), 0, reads.join("\n"));
  });
});
