// A memory cgroup for a process the benchmarks start, as a pod's container has one.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * A memory cgroup with the proxy container's memory limit, when this machine lets us make one (as
 * root, cgroup v1 or v2): Node sizes its heap from the limit it runs in, as it does in a pod, so
 * the memory measured is the pod's. Elsewhere the gateway runs unconfined, and says so.
 */
export function memoryCgroup(dir: string, limitBytes: number, label = "gateway"): { wrapper: string; peakMiB(): number; oomKills(): number; remove(): void } | undefined {
  const v2 = "/sys/fs/cgroup";
  const v1 = "/sys/fs/cgroup/memory";
  const name = `etcdstorage-bench-${process.pid}-${label}`;
  try {
    let files: { limit: string; peak: string; events: string; oom: RegExp };
    let group: string;
    if (existsSync(`${v2}/cgroup.controllers`) && readFileSync(`${v2}/cgroup.controllers`, "utf8").includes("memory")) {
      group = `${v2}/${name}`;
      files = { limit: "memory.max", peak: "memory.peak", events: "memory.events", oom: /^oom_kill (\d+)/m };
    } else if (existsSync(`${v1}/memory.limit_in_bytes`)) {
      group = `${v1}/${name}`;
      files = { limit: "memory.limit_in_bytes", peak: "memory.max_usage_in_bytes", events: "memory.oom_control", oom: /^oom_kill (\d+)/m };
    } else return undefined;
    mkdirSync(group);
    writeFileSync(`${group}/${files.limit}`, String(limitBytes));
    const wrapper = path.join(dir, `node-in-cgroup-${label}`);
    writeFileSync(wrapper, `#!/bin/sh\necho $$ > ${group}/cgroup.procs\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    return {
      wrapper,
      peakMiB: () => Number(readFileSync(`${group}/${files.peak}`, "utf8")) / (1024 * 1024),
      oomKills: () => Number(files.oom.exec(readFileSync(`${group}/${files.events}`, "utf8"))?.[1] ?? 0),
      remove: () => rmdirSync(group),
    };
  } catch {
    return undefined;
  }
}
