// The parse caches of hooks/pki/parse.ts change no answer: a cached parse or verdict equals one
// computed afresh by node:crypto, results handed out cannot alter later ones, and the caches stay
// within their bound however many distinct certificates they see.
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { before, describe, test } from "node:test";
import { issueCa, issueLeaf, type KeyPairPem } from "../../hooks/pki/issue.ts";
import { LruCache } from "../../hooks/lru-cache.ts";
import { clearParseCaches, keyMatches, PARSE_CACHE_LIMIT, parseCacheSizes, parseCertificate, parsePrivateKey, signedBy, type ParsedCert } from "../../hooks/pki/parse.ts";

const validity = { notBefore: new Date("2027-01-01T00:00:00Z"), notAfter: new Date("2028-01-01T00:00:00Z") };

/** What a parse says, comparable with deepEqual (the X509Certificate by its bytes). */
const facts = (cert: ParsedCert | undefined) => cert && { ...cert, x509: cert.x509.fingerprint256 };

describe("parse caches", () => {
  let certs: KeyPairPem[];
  before(async () => {
    const caA = await issueCa({ commonName: "A" }, validity);
    const caB = await issueCa({ commonName: "B" }, validity);
    const profile = { subject: { commonName: "leaf" }, usage: "server" as const, dnsNames: ["a.example", "localhost"], ipAddresses: ["127.0.0.1"] };
    certs = [caA, caB, await issueLeaf(profile, validity, caA), await issueLeaf(profile, validity, caB)];
  });

  test("a cached parse equals a fresh one, for certificates and for what does not parse", () => {
    const inputs = [...certs.map((c) => c.certPem), certs[0]!.certPem.trimEnd(), certs[0]!.certPem + certs[1]!.certPem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "", undefined];
    clearParseCaches();
    const fresh = inputs.map((pem) => facts(parseCertificate(pem)));
    const cached = inputs.map((pem) => facts(parseCertificate(pem)));
    assert.deepEqual(cached, fresh);
    assert.equal(fresh.filter(Boolean).length, 5);
    const leaf = parseCertificate(certs[2]!.certPem)!;
    assert.deepEqual(leaf.dnsNames, ["a.example", "localhost"]);
    assert.deepEqual(leaf.ipAddresses, ["127.0.0.1"]);
    assert.equal(leaf.notAfter.getTime(), validity.notAfter.getTime());
  });

  test("results handed out are the caller's own: changing one changes no later answer", () => {
    const first = parseCertificate(certs[2]!.certPem)!;
    first.dnsNames.push("evil.example");
    first.notAfter.setTime(0);
    first.subject = "CN=evil";
    const second = parseCertificate(certs[2]!.certPem)!;
    assert.deepEqual(second.dnsNames, ["a.example", "localhost"]);
    assert.equal(second.notAfter.getTime(), validity.notAfter.getTime());
    assert.equal(second.subject, "CN=leaf");
  });

  test("cached key and signature verdicts equal node:crypto's, for every pair", () => {
    for (const round of ["fresh", "cached"]) {
      if (round === "fresh") clearParseCaches();
      for (const cert of certs) {
        for (const other of certs) {
          const parsed = parseCertificate(cert.certPem)!;
          const expectedKey = new X509Certificate(cert.certPem).checkPrivateKey(createPrivateKey(other.keyPem));
          assert.equal(keyMatches(parsed, parsePrivateKey(other.keyPem)), expectedKey, `${round}: key match`);
          const issuer = new X509Certificate(other.certPem);
          const expectedSignature = new X509Certificate(cert.certPem).issuer === issuer.subject && new X509Certificate(cert.certPem).verify(issuer.publicKey);
          assert.equal(signedBy(parsed, parseCertificate(other.certPem)!), expectedSignature, `${round}: signature`);
        }
      }
    }
    assert.equal(keyMatches(parseCertificate(certs[0]!.certPem)!, parsePrivateKey(certs[0]!.keyPem)), true);
    assert.equal(keyMatches(parseCertificate(certs[0]!.certPem)!, parsePrivateKey("not a key")), false);
    assert.equal(signedBy(parseCertificate(certs[2]!.certPem)!, parseCertificate(certs[0]!.certPem)!), true);
    assert.equal(signedBy(parseCertificate(certs[2]!.certPem)!, parseCertificate(certs[1]!.certPem)!), false);
  });

  test("LruCache keeps at most its limit, forgetting the least recently used", () => {
    const computed: string[] = [];
    const cache = new LruCache<string>(3, 1000);
    const get = (key: string) => cache.getOrCompute(key, (k) => (computed.push(k), k.toUpperCase()));
    for (const key of ["a", "b", "c"]) get(key);
    assert.equal(get("a"), "A"); // a is now the most recently used
    get("d"); // evicts b
    assert.equal(cache.size, 3);
    assert.deepEqual(computed, ["a", "b", "c", "d"]);
    get("a");
    get("c");
    get("b");
    assert.deepEqual(computed, ["a", "b", "c", "d", "b"], "only the evicted entry is computed again");
  });

  test("LruCache keeps its total key length within its cap, and does not keep an entry too large for it", () => {
    const cache = new LruCache<number>(1000, 6400);
    for (let i = 0; i < 100; i++) cache.getOrCompute(String(i).padEnd(100, "x"), () => i);
    assert.ok(cache.chars <= 6400 && cache.size === 64, `${cache.size} entries, ${cache.chars} characters`);
    assert.equal(cache.getOrCompute("y".repeat(101), () => -1), -1);
    assert.equal(cache.size, 64, "an entry over 1/64 of the cap is computed, not kept");
    cache.clear();
    assert.deepEqual([cache.size, cache.chars], [0, 0]);
  });

  test("the certificate cache stays within its bound", () => {
    // (The key cache is the same LruCache; filling it would take seconds of failing key parses.)
    clearParseCaches();
    for (let i = 0; i < PARSE_CACHE_LIMIT + 100; i++) parseCertificate(`-----BEGIN CERTIFICATE-----\n${i.toString(36)}\n-----END CERTIFICATE-----\n`);
    assert.equal(parseCacheSizes().certificates, PARSE_CACHE_LIMIT);
    // A real certificate still parses, and its verdicts hold, after everything else was evicted.
    const leaf = parseCertificate(certs[2]!.certPem)!;
    assert.equal(signedBy(leaf, parseCertificate(certs[0]!.certPem)!), true);
    assert.equal(keyMatches(leaf, parsePrivateKey(certs[2]!.keyPem)), true);
  });
});
