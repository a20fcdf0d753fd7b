// Kubernetes resource quantities ("500m", "0.5", "64Mi", "1G"), the part of their grammar the
// EtcdStorage schema accepts: an unsigned decimal and an optional SI or binary suffix (no
// exponent form). Compared exactly, as fractions of big integers: 0.3 and 300m are equal.

// The schema's rule for a quantity (schemas/etcdstorage.v1alpha1.yaml: $defs.quantity, and the
// rules of spec.quota that check the format and the bounds at once); a test holds each to this one.
export const QUANTITY = /^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE])?$/;

const DECIMAL_EXPONENT: Record<string, number> = { n: -9, u: -6, m: -3, "": 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const BINARY_EXPONENT: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };

/** A quantity as numerator / denominator. */
export class Quantity {
  readonly numerator: bigint;
  readonly denominator: bigint;
  constructor(numerator: bigint, denominator: bigint) {
    this.numerator = numerator;
    this.denominator = denominator;
  }

  /** -1, 0 or 1, as Kubernetes' CEL quantity library's compareTo. */
  compareTo(other: Quantity): -1 | 0 | 1 {
    const left = this.numerator * other.denominator;
    const right = other.numerator * this.denominator;
    return left < right ? -1 : left > right ? 1 : 0;
  }

  /** The whole units it holds, rounded down: the bytes of "1.5Ki" (1536) or of "1000.9" (1000). */
  floor(): bigint {
    // Both are non-negative, so truncating division rounds down.
    return this.numerator / this.denominator;
  }
}

/** The quantity a schema-valid value stands for; undefined for anything else. */
export function parseQuantity(value: string | number): Quantity | undefined {
  const text = String(value);
  const match = QUANTITY.exec(text);
  if (!match) return undefined;
  const [, number, , suffix = ""] = match as unknown as [string, string, string | undefined, string | undefined];
  const [whole = "", fraction = ""] = number.split(".");
  let numerator = BigInt(`${whole}${fraction}` || "0");
  let denominator = 10n ** BigInt(fraction.length);
  const binary = BINARY_EXPONENT[suffix];
  const decimal = DECIMAL_EXPONENT[suffix] ?? 0;
  if (binary !== undefined) numerator *= 2n ** BigInt(binary);
  else if (decimal >= 0) numerator *= 10n ** BigInt(decimal);
  else denominator *= 10n ** BigInt(-decimal);
  return new Quantity(numerator, denominator);
}
