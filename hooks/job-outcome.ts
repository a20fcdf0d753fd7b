// What a backup or restore Job came to, from what Metacontroller observed: the Job's conditions
// and its pods' termination messages, where the program wrote its outcome as one JSON line
// (--result-file=/dev/termination-log). Observed objects are whatever the cluster holds: every
// field is read defensively, and a message that is not the program's line reads as none.
import type { KubeObject } from "./observed.ts";
import { objectList } from "./status.ts";

/** The program's line: its summary on success, or the failure's reason, exit code and message. */
export type ProgramResult =
  | { ok: true; summary: Record<string, unknown>; finishedAt?: string }
  | { ok: false; reason: string; exitCode: number; message: string; finishedAt?: string };

export type JobOutcome =
  | { state: "Missing" }
  | { state: "Running"; lastFailure?: Extract<ProgramResult, { ok: false }> }
  | { state: "Succeeded"; result?: Extract<ProgramResult, { ok: true }>; completionTime?: string }
  | { state: "Failed"; reason: string; message: string; result?: Extract<ProgramResult, { ok: false }> };

const REASON = /^[A-Z][A-Za-z0-9]{0,63}$/;

type JobCondition = { type?: unknown; status?: unknown; reason?: unknown; message?: unknown };
type Terminated = { exitCode?: unknown; message?: unknown; finishedAt?: unknown };

/** The terminated state of the container `name` of each pod, newest first. */
function terminations(pods: KubeObject[], container: string): Terminated[] {
  return pods
    .flatMap((pod) => {
      const statuses = objectList<{ name?: unknown; state?: { terminated?: Terminated }; lastState?: { terminated?: Terminated } }>((pod.status as { containerStatuses?: unknown } | undefined)?.containerStatuses);
      const status = statuses.find((s) => s.name === container);
      const terminated = status?.state?.terminated ?? status?.lastState?.terminated;
      return terminated && typeof terminated === "object" ? [terminated] : [];
    })
    .sort((a, b) => String(b.finishedAt ?? "").localeCompare(String(a.finishedAt ?? "")));
}

/** A termination message as the program's result, if it is one. */
export function parseResult(terminated: Terminated): ProgramResult | undefined {
  if (typeof terminated.message !== "string") return undefined;
  let line: Record<string, unknown>;
  try {
    line = JSON.parse(terminated.message.trim().split("\n").pop() ?? "") as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (line === null || typeof line !== "object" || Array.isArray(line)) return undefined;
  const finishedAt = typeof terminated.finishedAt === "string" ? { finishedAt: terminated.finishedAt } : {};
  if ((line.backedUp === true || line.restored === true) && terminated.exitCode === 0) return { ok: true, summary: line, ...finishedAt };
  if (line.failed === true) {
    const reason = typeof line.reason === "string" && REASON.test(line.reason) ? line.reason : "Failed";
    const exitCode = typeof line.exitCode === "number" ? line.exitCode : typeof terminated.exitCode === "number" ? terminated.exitCode : 1;
    return { ok: false, reason, exitCode, message: typeof line.message === "string" ? line.message.slice(0, 2048) : "no message", ...finishedAt };
  }
  return undefined;
}

export function jobOutcome(job: KubeObject | undefined, pods: KubeObject[], container: string): JobOutcome {
  if (!job) return { state: "Missing" };
  const conditions = objectList<JobCondition>((job.status as { conditions?: unknown } | null | undefined)?.conditions).filter((c) => c.status === "True");
  const results = terminations(pods, container).map(parseResult).filter((r): r is ProgramResult => r !== undefined);
  const lastFailure = results.find((r): r is Extract<ProgramResult, { ok: false }> => !r.ok);
  if (conditions.some((c) => c.type === "Complete")) {
    const result = results.find((r): r is Extract<ProgramResult, { ok: true }> => r.ok);
    const completionTime = (job.status as { completionTime?: unknown }).completionTime;
    return { state: "Succeeded", ...(result ? { result } : {}), ...(typeof completionTime === "string" ? { completionTime } : {}) };
  }
  const failed = conditions.find((c) => c.type === "Failed");
  if (failed) {
    const reason = typeof failed.reason === "string" && REASON.test(failed.reason) ? failed.reason : "JobFailed";
    return { state: "Failed", reason, message: typeof failed.message === "string" ? failed.message : "the Job failed", ...(lastFailure ? { result: lastFailure } : {}) };
  }
  return { state: "Running", ...(lastFailure ? { lastFailure } : {}) };
}

/** Bytes for a person: 512B, 12.4KiB, 3.1MiB, 1.2GiB. */
export function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value}B` : `${Math.round(value * 10) / 10}${units[unit]}`;
}
