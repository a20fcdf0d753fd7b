// Issuing keys and certificates: the only place with randomness (keys, serial numbers).
// @peculiar/x509 builds the certificates; keys and ECDSA signatures are node:crypto's, because
// @peculiar/webcrypto re-imports the key for every signature (0.5 ms against 0.04 ms, measured),
// which was the bulk of a first sync.
import "reflect-metadata"; // @peculiar/x509 2.x needs a Reflect polyfill before it loads
import { createHash, createPrivateKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { Crypto } from "@peculiar/webcrypto";

const webcrypto = new Crypto();
x509.cryptoProvider.set(webcrypto);

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { ...EC_P256, hash: "SHA-256" } as const;
// An uncompressed P-256 point, the subjectPublicKey bits at the end of every P-256 SPKI.
const P256_POINT_BYTES = 65;

/** What @peculiar/x509 needs to sign: random serial numbers, and ECDSA P-256 with SHA-256. */
const signer = {
  getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
  subtle: {
    sign: async (_algorithm: unknown, key: NodeSigningKey, data: ArrayBuffer) => sign("sha256", new Uint8Array(data), { key: key.keyObject, dsaEncoding: "ieee-p1363" }),
  },
} as unknown as globalThis.Crypto;

interface NodeSigningKey {
  algorithm: typeof EC_P256;
  type: "private";
  keyObject: KeyObject;
}

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

interface Keys {
  spki: ArrayBuffer;
  signingKey: NodeSigningKey;
  /** RFC 5280 key identifier (SHA-1 of the subjectPublicKey bits), hex. */
  keyId: string;
}

function generateKeys(): Keys {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
  return { spki: spki.buffer, signingKey: signingKey(privateKey), keyId: keyIdentifier(spki) };
}

function keyIdentifier(spki: Uint8Array): string {
  return createHash("sha1").update(spki.subarray(spki.length - P256_POINT_BYTES)).digest("hex");
}

function signingKey(keyObject: KeyObject): NodeSigningKey {
  return { algorithm: EC_P256, type: "private", keyObject };
}

export async function issueCa(subject: Subject, validity: Validity): Promise<KeyPairPem> {
  const keys = generateKeys();
  const name = distinguishedName(subject);
  const cert = await x509.X509CertificateGenerator.create({
    subject: name,
    issuer: name,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    signingAlgorithm: SIGNING,
    publicKey: keys.spki,
    signingKey: keys.signingKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectKeyIdentifierExtension(keys.keyId),
      new x509.AuthorityKeyIdentifierExtension(keys.keyId),
    ],
  }, signer);
  const pair = { certPem: `${cert.toString("pem")}\n`, keyPem: exportKey(keys.signingKey) };
  // The leaves that follow are signed with what is at hand, without reading the new CA back.
  remember(pair, { subject: cert.subject, keyId: keys.keyId, signingKey: keys.signingKey });
  return pair;
}

export async function issueLeaf(profile: LeafProfile, validity: Validity, issuer: KeyPairPem): Promise<KeyPairPem> {
  const keys = generateKeys();
  const issuing = issuerOf(issuer);
  const names = [...profile.dnsNames.map((value) => ({ type: "dns" as const, value })), ...profile.ipAddresses.map((value) => ({ type: "ip" as const, value }))];
  const cert = await x509.X509CertificateGenerator.create({
    subject: distinguishedName(profile.subject),
    issuer: issuing.subject,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    signingAlgorithm: SIGNING,
    publicKey: keys.spki,
    signingKey: issuing.signingKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([profile.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      new x509.SubjectKeyIdentifierExtension(keys.keyId),
      new x509.AuthorityKeyIdentifierExtension(issuing.keyId),
    ],
  }, signer);
  return { certPem: `${cert.toString("pem")}\n`, keyPem: exportKey(keys.signingKey) };
}

interface IssuerKeys {
  subject: string;
  keyId: string;
  signingKey: NodeSigningKey;
}

// One sync issues several leaves from the same CA: its certificate is read once. Keyed by the
// exact PEM text and bounded: a pure function of its input, it can change no answer.
const issuers = new Map<string, IssuerKeys>();
const MAX_ISSUERS = 256;

function issuerOf(issuer: KeyPairPem): IssuerKeys {
  const known = issuers.get(`${issuer.certPem}\0${issuer.keyPem}`);
  if (known) return known;
  const cert = new x509.X509Certificate(issuer.certPem);
  return remember(issuer, { subject: cert.subject, keyId: keyIdentifier(new Uint8Array(cert.publicKey.rawData)), signingKey: signingKey(createPrivateKey(issuer.keyPem)) });
}

function remember(issuer: KeyPairPem, keys: IssuerKeys): IssuerKeys {
  if (issuers.size >= MAX_ISSUERS) issuers.delete(issuers.keys().next().value!);
  issuers.set(`${issuer.certPem}\0${issuer.keyPem}`, keys);
  return keys;
}

function exportKey(key: NodeSigningKey): string {
  return key.keyObject.export({ type: "pkcs8", format: "pem" }) as string;
}
