/** Kubernetes' timestamp format: RFC 3339 in UTC, whole seconds. */
export function rfc3339(time: Date): string {
  return `${time.toISOString().slice(0, 19)}Z`;
}
