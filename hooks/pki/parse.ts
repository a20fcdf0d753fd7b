// Reading observed certificates with node:crypto (native, several times faster than a JS parser).
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";

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

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;

/** Every certificate block of a PEM bundle, as written (unparsed). */
export function splitPemBundle(bundle: string | undefined): string[] {
  return (bundle ?? "").match(PEM_CERTIFICATE)?.map((block) => (block.endsWith("\n") ? block : `${block}\n`)) ?? [];
}

export function parseCertificate(pem: string | undefined): ParsedCert | undefined {
  const blocks = splitPemBundle(pem);
  if (blocks.length !== 1) return undefined;
  try {
    const x509 = new X509Certificate(blocks[0]!);
    const names = (x509.subjectAltName ?? "").split(", ").filter(Boolean);
    return {
      pem: blocks[0]!,
      x509,
      notBefore: new Date(x509.validFrom),
      notAfter: new Date(x509.validTo),
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
  try {
    return createPrivateKey(pem);
  } catch {
    return undefined;
  }
}

export function keyMatches(cert: ParsedCert, key: KeyObject | undefined): boolean {
  return key !== undefined && cert.x509.checkPrivateKey(key);
}

export function signedBy(cert: ParsedCert, issuer: ParsedCert): boolean {
  return cert.x509.issuer === issuer.subject && cert.x509.verify(issuer.x509.publicKey);
}

/** cert-manager's default: renew when 2/3 of the lifetime has passed, in whole seconds. */
export function renewalTime(cert: { notBefore: Date; notAfter: Date }): Date {
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
  return new Date(Math.floor((cert.notBefore.getTime() + (lifetime * 2) / 3) / 1000) * 1000);
}

export function lifetimeMs(cert: { notBefore: Date; notAfter: Date }): number {
  return cert.notAfter.getTime() - cert.notBefore.getTime();
}
