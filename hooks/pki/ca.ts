// A tenant CA's life, decided from the observed CA Secret alone (the hooks keep no state):
//   issue → (2/3 of its life) publish a successor next to it → (overlap) leaves move to the
//   successor, the old CA stays trusted → (old CA expires) it leaves the bundle.
// A CA that tenants may trust is never replaced without that overlap, even when its Secret is damaged.
import { issueCa, wholeSeconds, type KeyPairPem, type Subject } from "./issue.ts";
import { keyMatches, lifetimeMs, parseCertificate, parsePrivateKey, renewalTime, splitPemBundle, type ParsedCert } from "./parse.ts";

/** Keys of a CA Secret (type kubernetes.io/tls): the issuing CA, its published successor, and the trust bundle. */
export const CA_KEYS = { cert: "tls.crt", key: "tls.key", bundle: "ca.crt", successorCert: "successor.crt", successorKey: "successor.key" } as const;

export interface Signer extends KeyPairPem {
  cert: ParsedCert;
}

export interface CaStep {
  kind: "Issued" | "SuccessorPublished" | "Promoted";
  message: string;
}

export interface CaPlan {
  /** Desired Secret data (PEM text). */
  data: Record<string, string>;
  /** Signs new leaves. */
  issuer: Signer;
  /** Leaves signed by one of these are kept: the issuer, or every trusted CA while the issuer is damaged. */
  acceptedIssuers: ParsedCert[];
  /** The issuing CA could not sign: leaves are only replaced when broken, so clients are not cut off. */
  degraded: boolean;
  /** The trust bundle: every CA still trusted (issuing, successor, retired until expiry), oldest first. */
  bundlePem: string;
  entries: { role: "Issuing" | "Successor" | "Retired"; cert: ParsedCert; renewAt: Date }[];
  nextStepAt: Date;
  steps: CaStep[];
}

/**
 * The leaves move to a successor once it has been published for 1/6 of its lifetime (so a 10-year
 * CA overlaps for 20 months: every consumer restarts many times in between), or for half the time
 * the old CA has left if that is shorter, so that leaves have moved before the old CA expires.
 */
export function promotionTime(successor: ParsedCert, previousNotAfter: Date | undefined): Date {
  const published = successor.notBefore.getTime();
  const overlap = Math.min(lifetimeMs(successor) / 6, Math.max(0, ((previousNotAfter?.getTime() ?? published) - published) / 2));
  return wholeSeconds(published + overlap);
}

export async function reconcileCa(input: { observed: Record<string, string | undefined>; subject: Subject; validityMs: number; now: Date }): Promise<CaPlan> {
  const { observed, validityMs, now } = input;
  const steps: CaStep[] = [];
  const alive = (cert: ParsedCert | undefined): cert is ParsedCert => cert !== undefined && cert.isCa && cert.notAfter > now;

  const trusted = splitPemBundle(observed[CA_KEYS.bundle]).map(parseCertificate).filter(alive);
  const issuingKey = parsePrivateKey(observed[CA_KEYS.key]);
  // A lost tls.crt is recovered from the bundle when the key is intact.
  const issuingCert = parseCertificate(observed[CA_KEYS.cert]) ?? trusted.find((cert) => keyMatches(cert, issuingKey));
  const successorCert = parseCertificate(observed[CA_KEYS.successorCert]);

  let active = signer(issuingCert, observed[CA_KEYS.key], now);
  let successor = signer(successorCert, observed[CA_KEYS.successorKey], now);
  const previous: ParsedCert[] = [issuingCert, ...trusted].filter(alive);

  const issue = async (): Promise<Signer> => {
    const notBefore = wholeSeconds(now);
    const pair = await issueCa(
      { ...input.subject, organizationalUnit: `issued ${notBefore.toISOString()}` },
      { notBefore, notAfter: wholeSeconds(notBefore.getTime() + validityMs) },
    );
    return { ...pair, cert: parseCertificate(pair.certPem)! };
  };

  if (!active && !successor && previous.length === 0) {
    // Nothing anybody could trust exists yet (or all of it expired): a new CA is safe at once.
    active = await issue();
    steps.push({ kind: "Issued", message: `issued CA ${active.cert.subject.replaceAll("\n", ", ")}` });
  }

  if (successor && now >= promotionTime(successor.cert, (active?.cert ?? latest(previous))?.notAfter)) {
    if (active) previous.push(active.cert);
    active = successor;
    successor = undefined;
    steps.push({ kind: "Promoted", message: `leaves move to CA ${active.cert.subject.replaceAll("\n", ", ")}` });
  }

  const needsSuccessor = !active || now >= renewalTime(active.cert) || Math.abs(lifetimeMs(active.cert) - validityMs) >= 1000;
  if (needsSuccessor && !successor) {
    successor = await issue();
    const why = !active ? "the issuing CA's Secret is damaged" : now >= renewalTime(active.cert) ? "2/3 of the CA's lifetime has passed" : "the CA's validity no longer matches the spec";
    steps.push({ kind: "SuccessorPublished", message: `published successor CA because ${why}` });
  }

  const issuer = active ?? successor!;
  const successorPromotion = successor ? promotionTime(successor.cert, (active?.cert ?? latest(previous))?.notAfter) : undefined;
  const retired = unique(previous.filter((cert) => alive(cert) && cert.pem !== active?.certPem && cert.pem !== successor?.certPem));
  // Oldest first: a promotion changes which CA signs, not the bundle, so it rolls no consumer.
  const published = unique([active?.cert, successor?.cert, ...retired].filter((c): c is ParsedCert => c !== undefined)).sort(
    (x, y) => x.notBefore.getTime() - y.notBefore.getTime() || x.x509.fingerprint256.localeCompare(y.x509.fingerprint256),
  );

  const entries: CaPlan["entries"] = [
    ...(active ? [{ role: "Issuing" as const, cert: active.cert, renewAt: successor ? active.cert.notAfter : renewalTime(active.cert) }] : []),
    ...(successor ? [{ role: "Successor" as const, cert: successor.cert, renewAt: successorPromotion! }] : []),
    ...retired.map((cert) => ({ role: "Retired" as const, cert, renewAt: cert.notAfter })),
  ];
  const upcoming = [
    ...(active && !successor ? [renewalTime(active.cert)] : []),
    ...(successorPromotion ? [successorPromotion] : []),
    ...published.map((cert) => cert.notAfter),
  ];

  return {
    data: {
      // A damaged issuing CA stays as it was: it is evidence, and replacing it is the successor's job.
      [CA_KEYS.cert]: active?.certPem ?? observed[CA_KEYS.cert] ?? "",
      [CA_KEYS.key]: active?.keyPem ?? observed[CA_KEYS.key] ?? "",
      [CA_KEYS.bundle]: published.map((cert) => cert.pem).join(""),
      ...(successor ? { [CA_KEYS.successorCert]: successor.certPem, [CA_KEYS.successorKey]: successor.keyPem } : {}),
    },
    issuer,
    acceptedIssuers: active ? [active.cert] : published,
    degraded: !active,
    bundlePem: published.map((cert) => cert.pem).join(""),
    entries,
    nextStepAt: new Date(Math.min(...upcoming.map((t) => t.getTime()))),
    steps,
  };
}

function signer(cert: ParsedCert | undefined, keyPem: string | undefined, now: Date): Signer | undefined {
  if (!cert || !cert.isCa || now >= cert.notAfter || !keyPem || !keyMatches(cert, parsePrivateKey(keyPem))) return undefined;
  return { cert, certPem: cert.pem, keyPem };
}

function latest(certs: ParsedCert[]): ParsedCert | undefined {
  return [...certs].sort((a, b) => b.notAfter.getTime() - a.notAfter.getTime())[0];
}

function unique(certs: ParsedCert[]): ParsedCert[] {
  const seen = new Set<string>();
  return certs.filter((cert) => !seen.has(cert.x509.fingerprint256) && seen.add(cert.x509.fingerprint256));
}
