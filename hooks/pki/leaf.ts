// Whether an observed leaf certificate is kept byte for byte or re-issued: a short-circuiting
// chain of named checks, as cert-manager does it, with the clock passed in.
import { issueLeaf, wholeSeconds, type KeyPairPem, type LeafProfile } from "./issue.ts";
import { keyMatches, lifetimeMs, parseCertificate, parsePrivateKey, renewalTime, signedBy, type ParsedCert } from "./parse.ts";
import type { CaPlan } from "./ca.ts";

export type ReissueReason =
  | "Missing"
  | "Unparsable"
  | "KeyMismatch"
  | "IssuerChanged"
  | "ProfileChanged"
  | "ValidityChanged"
  | "Expired"
  | "NearingExpiry";

export interface LeafPlan extends KeyPairPem {
  cert: ParsedCert;
  renewAt: Date;
  /** Set when the leaf was (re-)issued by this call. */
  reissued?: ReissueReason;
}

const EKU_OID = { server: "1.3.6.1.5.5.7.3.1", client: "1.3.6.1.5.5.7.3.2" } as const;

export function reissueReason(
  observed: { certPem?: string; keyPem?: string },
  profile: LeafProfile,
  validityMs: number,
  ca: Pick<CaPlan, "acceptedIssuers" | "degraded">,
  now: Date,
): ReissueReason | undefined {
  if (!observed.certPem || !observed.keyPem) return "Missing";
  const cert = parseCertificate(observed.certPem);
  if (!cert || cert.isCa) return "Unparsable";
  if (!keyMatches(cert, parsePrivateKey(observed.keyPem))) return "KeyMismatch";
  const issuer = ca.acceptedIssuers.find((candidate) => signedBy(cert, candidate));
  if (!issuer) return "IssuerChanged";
  if (!matchesProfile(cert, profile)) return "ProfileChanged";
  if (now >= cert.notAfter) return "Expired";
  // While the issuing CA is damaged, a working leaf is worth more than a fresh one its clients may not trust yet.
  if (ca.degraded) return undefined;
  const cappedByIssuer = cert.notAfter.getTime() === issuer.notAfter.getTime() && lifetimeMs(cert) < validityMs;
  if (Math.abs(lifetimeMs(cert) - validityMs) >= 1000 && !cappedByIssuer) return "ValidityChanged";
  if (now >= renewalTime(cert)) return "NearingExpiry";
  return undefined;
}

export async function reconcileLeaf(input: {
  observed: { certPem?: string; keyPem?: string };
  profile: LeafProfile;
  validityMs: number;
  ca: CaPlan;
  now: Date;
}): Promise<LeafPlan> {
  const { observed, profile, validityMs, ca, now } = input;
  const reason = reissueReason(observed, profile, validityMs, ca, now);
  if (!reason) {
    const cert = parseCertificate(observed.certPem)!;
    return { certPem: observed.certPem!, keyPem: observed.keyPem!, cert, renewAt: ca.degraded ? cert.notAfter : renewalTime(cert) };
  }
  const notBefore = wholeSeconds(now);
  // A leaf never outlives its issuer.
  const notAfter = new Date(Math.min(wholeSeconds(notBefore.getTime() + validityMs).getTime(), ca.issuer.cert.notAfter.getTime()));
  const pair = await issueLeaf(profile, { notBefore, notAfter }, ca.issuer);
  const cert = parseCertificate(pair.certPem)!;
  return { ...pair, cert, renewAt: renewalTime(cert), reissued: reason };
}

function matchesProfile(cert: ParsedCert, profile: LeafProfile): boolean {
  const subject = Object.fromEntries(cert.subject.split("\n").map((line) => line.split(/=(.*)/s).slice(0, 2)));
  const expected = { CN: profile.subject.commonName, O: profile.subject.organization, OU: profile.subject.organizationalUnit };
  const sameSubject = Object.entries(expected).every(([key, value]) => subject[key] === value) && Object.keys(subject).every((key) => key in expected);
  const sameSet = (a: string[], b: string[]) => a.length === b.length && [...a].sort().every((v, i) => v === [...b].sort()[i]);
  return (
    sameSubject &&
    sameSet(cert.dnsNames, profile.dnsNames) &&
    sameSet(cert.ipAddresses, profile.ipAddresses) &&
    (cert.x509.keyUsage ?? []).includes(EKU_OID[profile.usage])
  );
}
