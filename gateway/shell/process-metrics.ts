// The process's own metrics, under the names, types and labels of prom-client's default metrics
// (which the gateway exported before it wrote its exposition by hand): CPU, memory, file
// descriptors, event loop delay, active resources, V8's heap and its spaces, garbage collections
// and Node's version. prom-client's nodejs_active_handles and nodejs_active_requests, which read
// Node's private APIs, are left out.
import { readdir, readFile } from "node:fs/promises";
import { constants, monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";
import v8 from "node:v8";
import { escapeLabel, Histogram, type Exposition } from "./exposition.ts";

const GC_BUCKETS = [0.001, 0.01, 0.1, 1, 2, 5];
// The kinds of NodeGCPerformanceDetail, as prom-client names them (Node's constants: a major
// collection is 4, not 2, which is the minor mark-sweep V8 does not run by default).
const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
};
// prom-client samples the event loop every 10 ms: 100 wakeups a second cost an idle gateway 0.35%
// of a core, most of what it spends idle. Every 100 ms was still 0.027 of the 0.062 CPU seconds an
// idle gateway spent a minute (bench/gateway-cost.ts's long idle); every second it is a tenth of
// that. A stall still shows in the histogram when it holds a sample back (one of 250 ms, a
// quarter of the time), and nodejs_eventloop_lag_seconds is measured at each scrape.
const EVENT_LOOP_RESOLUTION_MS = 1_000;

export interface ProcessMetrics {
  write(out: Exposition): Promise<void>;
}

export function processMetrics(): ProcessMetrics {
  const startTime = Math.round(Date.now() / 1000 - process.uptime());
  const delay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  delay.enable();
  const gc = new Map<string, Histogram>();
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
      const kind = GC_KINDS[entry.detail?.kind ?? 0];
      if (kind === undefined) continue;
      let histogram = gc.get(kind);
      if (histogram === undefined) gc.set(kind, (histogram = new Histogram(GC_BUCKETS)));
      histogram.observe(entry.duration / 1000);
    }
  }).observe({ entryTypes: ["gc"] });

  return {
    async write(out) {
      const lag = await new Promise<number>((resolve) => {
        const start = process.hrtime.bigint();
        setImmediate(() => resolve(Number(process.hrtime.bigint() - start) / 1e9));
      });
      const [status, limits, fds] = await Promise.all([
        readFile("/proc/self/status", "utf8").catch(() => ""),
        readFile("/proc/self/limits", "utf8").catch(() => ""),
        readdir("/proc/self/fd").catch(() => undefined),
      ]);
      const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
      const cpu = process.cpuUsage();
      const gauge = (name: string, help: string, value: number, type: "gauge" | "counter" = "gauge") => {
        out.family(name, type, help);
        out.sample(name, "", value);
      };
      gauge("process_cpu_user_seconds_total", "Total user CPU time spent in seconds.", cpu.user / 1e6, "counter");
      gauge("process_cpu_system_seconds_total", "Total system CPU time spent in seconds.", cpu.system / 1e6, "counter");
      gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", (cpu.user + cpu.system) / 1e6, "counter");
      gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", startTime);
      if (status !== "") {
        gauge("process_resident_memory_bytes", "Resident memory size in bytes.", kib("VmRSS"));
        gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", kib("VmSize"));
        gauge("process_heap_bytes", "Process heap size in bytes.", kib("VmData"));
      } else {
        gauge("process_resident_memory_bytes", "Resident memory size in bytes.", process.memoryUsage.rss());
      }
      // The directory read itself held one descriptor.
      if (fds !== undefined) gauge("process_open_fds", "Number of open file descriptors.", fds.length - 1);
      const maxFds = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
      if (maxFds !== undefined) gauge("process_max_fds", "Maximum number of open file descriptors.", Number(maxFds));

      gauge("nodejs_eventloop_lag_seconds", "Lag of event loop in seconds.", lag);
      gauge("nodejs_eventloop_lag_min_seconds", "The minimum recorded event loop delay.", delay.min / 1e9);
      gauge("nodejs_eventloop_lag_max_seconds", "The maximum recorded event loop delay.", delay.max / 1e9);
      gauge("nodejs_eventloop_lag_mean_seconds", "The mean of the recorded event loop delays.", delay.mean / 1e9);
      gauge("nodejs_eventloop_lag_stddev_seconds", "The standard deviation of the recorded event loop delays.", delay.stddev / 1e9);
      gauge("nodejs_eventloop_lag_p50_seconds", "The 50th percentile of the recorded event loop delays.", delay.percentile(50) / 1e9);
      gauge("nodejs_eventloop_lag_p90_seconds", "The 90th percentile of the recorded event loop delays.", delay.percentile(90) / 1e9);
      gauge("nodejs_eventloop_lag_p99_seconds", "The 99th percentile of the recorded event loop delays.", delay.percentile(99) / 1e9);
      delay.reset();

      const resources = new Map<string, number>();
      const active = process.getActiveResourcesInfo();
      for (const type of active) resources.set(type, (resources.get(type) ?? 0) + 1);
      out.family("nodejs_active_resources", "gauge", "Number of active resources that are currently keeping the event loop alive, grouped by async resource type.");
      for (const [type, count] of resources) out.sample("nodejs_active_resources", `type="${escapeLabel(type)}"`, count);
      gauge("nodejs_active_resources_total", "Total number of active resources.", active.length);

      const memory = process.memoryUsage();
      gauge("nodejs_heap_size_total_bytes", "Process heap size from Node.js in bytes.", memory.heapTotal);
      gauge("nodejs_heap_size_used_bytes", "Process heap size used from Node.js in bytes.", memory.heapUsed);
      gauge("nodejs_external_memory_bytes", "Node.js external memory size in bytes.", memory.external);
      const spaces = v8.getHeapSpaceStatistics();
      const space = (name: string) => `space="${escapeLabel(name.replace(/_space$/, ""))}"`;
      out.family("nodejs_heap_space_size_total_bytes", "gauge", "Process heap space size total from Node.js in bytes.");
      for (const s of spaces) out.sample("nodejs_heap_space_size_total_bytes", space(s.space_name), s.space_size);
      out.family("nodejs_heap_space_size_used_bytes", "gauge", "Process heap space size used from Node.js in bytes.");
      for (const s of spaces) out.sample("nodejs_heap_space_size_used_bytes", space(s.space_name), s.space_used_size);
      out.family("nodejs_heap_space_size_available_bytes", "gauge", "Process heap space size available from Node.js in bytes.");
      for (const s of spaces) out.sample("nodejs_heap_space_size_available_bytes", space(s.space_name), s.space_available_size);

      const [major, minor, patch] = process.versions.node.split(".");
      out.family("nodejs_version_info", "gauge", "Node.js version info.");
      out.sample("nodejs_version_info", `version="${process.version}",major="${major}",minor="${minor}",patch="${patch}"`, 1);

      out.family("nodejs_gc_duration_seconds", "histogram", "Garbage collection duration by kind, one of major, minor, incremental or weakcb.");
      for (const [kind, histogram] of gc) histogram.write(out, "nodejs_gc_duration_seconds", `kind="${kind}"`);
    },
  };
}
