// Prometheus's text exposition format, written by hand (metrics.ts, process-metrics.ts).

/** Prometheus's text format, version 0.0.4. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A label value as the text format writes it. */
export function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** A sample's value as the text format writes it. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Writes families of samples; each sample's labels are followed by the tenant's. */
export class Exposition {
  private readonly lines: string[] = [];
  private readonly tenant: string;

  constructor(tenant: string) {
    this.tenant = `tenant="${escapeLabel(tenant)}"`;
  }

  family(name: string, type: "counter" | "gauge" | "histogram", help: string): void {
    if (this.lines.length > 0) this.lines.push("");
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${name} ${type}`);
  }

  /** One sample; `labels` as written between the braces, before the tenant's (`method="...",code="OK"`), or empty. */
  sample(name: string, labels: string, value: number): void {
    this.lines.push(`${name}{${labels === "" ? this.tenant : `${labels},${this.tenant}`}} ${formatValue(value)}`);
  }

  text(): string {
    return `${this.lines.join("\n")}\n`;
  }
}

/** A histogram of one label set: observations per bucket, written cumulative. */
export class Histogram {
  private readonly bounds: readonly number[];
  /** Observations per bucket (not cumulative), the last for those above every bound. */
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let bucket = 0;
    while (bucket < this.bounds.length && value > this.bounds[bucket]!) bucket++;
    this.counts[bucket]!++;
    this.sum += value;
    this.count++;
  }

  /** Its _bucket, _sum and _count samples; `labels` as Exposition.sample takes them. */
  write(out: Exposition, name: string, labels: string): void {
    let cumulative = 0;
    this.bounds.forEach((bound, i) => {
      cumulative += this.counts[i]!;
      out.sample(`${name}_bucket`, `le="${bound}",${labels}`, cumulative);
    });
    out.sample(`${name}_bucket`, `le="+Inf",${labels}`, this.count);
    out.sample(`${name}_sum`, labels, this.sum);
    out.sample(`${name}_count`, labels, this.count);
  }
}
