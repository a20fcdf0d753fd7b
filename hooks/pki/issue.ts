// Issuing keys and certificates: the only place with randomness (keys, serial numbers).
import "reflect-metadata"; // @peculiar/x509 2.x needs a Reflect polyfill before it loads
import * as x509 from "@peculiar/x509";
import { Crypto } from "@peculiar/webcrypto";

const webcrypto = new Crypto();
x509.cryptoProvider.set(webcrypto);

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { ...EC_P256, hash: "SHA-256" } as const;

export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

export interface Subject {
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
}

export interface LeafProfile {
  subject: Subject;
  usage: "server" | "client";
  dnsNames: string[];
  ipAddresses: string[];
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** X.509 keeps whole seconds; so do we, so that the validity we compare with is the one stored. */
export function wholeSeconds(time: Date | number): Date {
  return new Date(Math.floor(new Date(time).getTime() / 1000) * 1000);
}

export function distinguishedName(subject: Subject): string {
  const escape = (value: string) => value.replace(/([,+"\\<>;=])/g, "\\$1");
  return [
    subject.commonName !== undefined && `CN=${escape(subject.commonName)}`,
    subject.organizationalUnit !== undefined && `OU=${escape(subject.organizationalUnit)}`,
    subject.organization !== undefined && `O=${escape(subject.organization)}`,
  ]
    .filter(Boolean)
    .join(", ");
}

export async function issueCa(subject: Subject, validity: Validity): Promise<KeyPairPem> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const name = distinguishedName(subject);
  const cert = await x509.X509CertificateGenerator.create({
    subject: name,
    issuer: name,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: `${cert.toString("pem")}\n`, keyPem: await exportKey(keys.privateKey) };
}

export async function issueLeaf(profile: LeafProfile, validity: Validity, issuer: KeyPairPem): Promise<KeyPairPem> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const issuerKey = await webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(issuer.keyPem), EC_P256, false, ["sign"]);
  const names = [...profile.dnsNames.map((value) => ({ type: "dns" as const, value })), ...profile.ipAddresses.map((value) => ({ type: "ip" as const, value }))];
  const cert = await x509.X509CertificateGenerator.create({
    subject: distinguishedName(profile.subject),
    issuer: issuerCert.subject,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: issuerKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([profile.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuerCert),
    ],
  });
  return { certPem: `${cert.toString("pem")}\n`, keyPem: await exportKey(keys.privateKey) };
}

async function exportKey(key: CryptoKey): Promise<string> {
  return `${x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY")}\n`;
}
