// How backup, restore and a schedule's run end when they do not succeed: an exit code (1: running it again may
// succeed; 3: it cannot), a reason in the project's condition style for whoever reports it (the
// hooks read it from --result-file, a Job's termination message), and one line for a person.
import { CoreCallError } from "./calls.ts";
import { KubeApiError } from "./kube-api.ts";

// gRPC statuses of a core etcd that could not be reached or answered in time.
const UNAVAILABLE = 14;
const DEADLINE_EXCEEDED = 4;

export type Reason =
  // backup
  | "Compacted"
  | "VolumeFull"
  | "WriteFailed"
  | "OutputExists"
  // schedule
  | "BackupFailed"
  | "KubeApiError"
  // restore, refused before writing
  | "InvalidFile"
  | "OverQuota"
  | "PrefixNotEmpty"
  // restore, failed while writing
  | "RestoreFailed"
  | "CleanupFailed"
  // either
  | "CoreUnavailable"
  | "CoreError"
  | "Failed";

export class Failure extends Error {
  readonly exitCode: 1 | 3;
  readonly reason: Reason;
  constructor(exitCode: 1 | 3, reason: Reason, message: string) {
    super(message);
    this.exitCode = exitCode;
    this.reason = reason;
  }
}

/** Any error as a Failure: a call core etcd could not answer is worth retrying, so is anything unforeseen. */
export function asFailure(error: unknown, command: string): Failure {
  if (error instanceof Failure) return error;
  const message = `${command} failed: ${(error as Error)?.message ?? String(error)}`;
  if (error instanceof KubeApiError) return new Failure(1, "KubeApiError", message);
  if (error instanceof CoreCallError) return new Failure(1, error.code === UNAVAILABLE || error.code === DEADLINE_EXCEEDED ? "CoreUnavailable" : "CoreError", message);
  return new Failure(1, "Failed", message);
}
