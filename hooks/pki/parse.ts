// Reading observed certificates with node:crypto (native, several times faster than a JS parser).
//
// Metacontroller calls sync for every tenant at every resync, and in the steady state every
// certificate it sees is one it saw last time: parsing PEM and checking keys and signatures again
// was most of that call's cost. Each of those is a pure function of its input bytes, so results
// are kept per exact PEM text (bounded, least recently used out) and answers cannot change.
// Nothing here depends on the clock; what does (expiry, renewal) is decided by the callers.
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { LruCache } from "../lru-cache.ts";

export interface ParsedCert {
  pem: string;
  x509: X509Certificate;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  /** The subject as node:crypto prints it, "CN=...\nO=..." */
  subject: string;
  dnsNames: string[];
  ipAddresses: string[];
}

// Comfortably above what hundreds of tenants with tens of destinations hold (about 5 certificates
// and 3 keys per tenant plus one of each per destination): a resync walks every tenant in turn, and
// an LRU smaller than that walk would miss on every call. Measured: about 4 KiB of RSS per cached
// certificate and 3 KiB per key, so at most some 70 MiB when full; a real PEM is under 4 KiB, so
// the character cap only bites on junk.
export const PARSE_CACHE_LIMIT = 10_000;
const PARSE_CACHE_MAX_CHARS = PARSE_CACHE_LIMIT * 2048;

/** What a certificate's bytes say, computed once per distinct PEM text; `undefined` if unparsable. */
interface CertFacts {
  pem: string;
  x509: X509Certificate;
  notBefore: number;
  notAfter: number;
  isCa: boolean;
  subject: string;
  dnsNames: readonly string[];
  ipAddresses: readonly string[];
}

const certificates = new LruCache<CertFacts | undefined>(PARSE_CACHE_LIMIT, PARSE_CACHE_MAX_CHARS);
const privateKeys = new LruCache<KeyObject | undefined>(PARSE_CACHE_LIMIT, PARSE_CACHE_MAX_CHARS);
// Verdicts hang off the (cached, hence shared) objects they were computed from, weakly: they are
// forgotten with the certificate or key, so they need no bound of their own.
const keyVerdicts = new WeakMap<X509Certificate, WeakMap<KeyObject, boolean>>();
const signatureVerdicts = new WeakMap<X509Certificate, WeakMap<X509Certificate, boolean>>();

/** Cache sizes, for tests and diagnostics. */
export function parseCacheSizes(): { certificates: number; privateKeys: number; limit: number } {
  return { certificates: certificates.size, privateKeys: privateKeys.size, limit: PARSE_CACHE_LIMIT };
}

/** Forget every cached result (tests compare cached answers with fresh ones). */
export function clearParseCaches(): void {
  certificates.clear();
  privateKeys.clear();
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;

/** Every certificate block of a PEM bundle, as written (unparsed). */
export function splitPemBundle(bundle: string | undefined): string[] {
  return (bundle ?? "").match(PEM_CERTIFICATE)?.map((block) => (block.endsWith("\n") ? block : `${block}\n`)) ?? [];
}

export function parseCertificate(pem: string | undefined): ParsedCert | undefined {
  if (pem === undefined) return undefined;
  // Keyed by the text as given, so that a hit skips even splitting the bundle.
  const facts = certificates.getOrCompute(pem, readCertificate);
  // A fresh object each call (own Dates and arrays): callers may hold or change it without
  // touching what the next call gets.
  return (
    facts && {
      pem: facts.pem,
      x509: facts.x509,
      notBefore: new Date(facts.notBefore),
      notAfter: new Date(facts.notAfter),
      isCa: facts.isCa,
      subject: facts.subject,
      dnsNames: [...facts.dnsNames],
      ipAddresses: [...facts.ipAddresses],
    }
  );
}

function readCertificate(pem: string): CertFacts | undefined {
  const blocks = splitPemBundle(pem);
  if (blocks.length !== 1) return undefined;
  try {
    const x509 = new X509Certificate(blocks[0]!);
    const names = (x509.subjectAltName ?? "").split(", ").filter(Boolean);
    return {
      pem: blocks[0]!,
      x509,
      notBefore: new Date(x509.validFrom).getTime(),
      notAfter: new Date(x509.validTo).getTime(),
      isCa: x509.ca,
      subject: x509.subject,
      dnsNames: names.filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4)),
      ipAddresses: names.filter((n) => n.startsWith("IP Address:")).map((n) => n.slice(11)),
    };
  } catch {
    return undefined;
  }
}

export function parsePrivateKey(pem: string | undefined): KeyObject | undefined {
  if (!pem) return undefined;
  // KeyObjects are immutable, so one per distinct PEM text is shared.
  return privateKeys.getOrCompute(pem, readPrivateKey);
}

function readPrivateKey(pem: string): KeyObject | undefined {
  try {
    return createPrivateKey(pem);
  } catch {
    return undefined;
  }
}

export function keyMatches(cert: ParsedCert, key: KeyObject | undefined): boolean {
  return key !== undefined && remember(keyVerdicts, cert.x509, key, () => cert.x509.checkPrivateKey(key));
}

export function signedBy(cert: ParsedCert, issuer: ParsedCert): boolean {
  return cert.x509.issuer === issuer.subject && remember(signatureVerdicts, cert.x509, issuer.x509, () => cert.x509.verify(issuer.x509.publicKey));
}

function remember<A extends object, B extends object>(verdicts: WeakMap<A, WeakMap<B, boolean>>, a: A, b: B, check: () => boolean): boolean {
  let byB = verdicts.get(a);
  if (!byB) verdicts.set(a, (byB = new WeakMap()));
  let verdict = byB.get(b);
  if (verdict === undefined) byB.set(b, (verdict = check()));
  return verdict;
}

/** cert-manager's default: renew when 2/3 of the lifetime has passed, in whole seconds. */
export function renewalTime(cert: { notBefore: Date; notAfter: Date }): Date {
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
  return new Date(Math.floor((cert.notBefore.getTime() + (lifetime * 2) / 3) / 1000) * 1000);
}

export function lifetimeMs(cert: { notBefore: Date; notAfter: Date }): number {
  return cert.notAfter.getTime() - cert.notBefore.getTime();
}
