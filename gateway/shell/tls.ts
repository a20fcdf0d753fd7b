// The four pieces of TLS material a gateway uses, read from the mounted Secret and ConfigMap
// files: its serving certificate and the client-CA bundle (towards tenants), core etcd's CA and the
// client certificate (towards core etcd). The files are looked at every second (their inode, size
// and times: the kubelet swaps a volume's files for new ones, and any write changes the times) and
// read again when one changed, and every minute whatever their look; a complete, valid change takes
// effect for new connections at once, so a renewal or a CA rotation never restarts the gateway. A
// half-written change (a certificate without its new key) waits for the rest.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { Logger } from "../log.ts";
import { ConfigError, type GatewayConfig } from "./config.ts";

export interface KeyPairWithCa {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

type Files = Pick<GatewayConfig, "certFile" | "keyFile" | "trustedCaFile" | "coreCaFile" | "coreCertFile" | "coreKeyFile">;
type Side = "serving" | "core";

const RELOAD_INTERVAL_MS = 1_000;
// Read whatever the files look like after this many looks: a safety net under the change check.
const READ_EVERY = 60;
// Which flag names each file, for messages.
const SIDES: Record<Side, { cert: [keyof Files, string]; key: [keyof Files, string]; ca: [keyof Files, string] }> = {
  serving: { cert: ["certFile", "--cert-file"], key: ["keyFile", "--key-file"], ca: ["trustedCaFile", "--trusted-ca-file"] },
  core: { cert: ["coreCertFile", "--cert"], key: ["coreKeyFile", "--key"], ca: ["coreCaFile", "--cacert"] },
};

/** Reads and checks one side's material; throws ConfigError naming the flag of the bad file. */
export function loadSide(files: Files, side: Side, read: (path: string) => Buffer = readFileSync): KeyPairWithCa {
  const spec = SIDES[side];
  const file = ([field, flag]: [keyof Files, string]) => {
    try {
      return read(files[field]);
    } catch (error) {
      throw new ConfigError(flag, `cannot read ${files[field]}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  };
  const material = { cert: file(spec.cert), key: file(spec.key), ca: file(spec.ca) };
  check(material, spec, files);
  return material;
}

function check(material: KeyPairWithCa, spec: (typeof SIDES)[Side], files: Files): void {
  const certificates = (pem: Buffer, [field, flag]: [keyof Files, string]) => {
    const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length === 0) throw new ConfigError(flag, `${files[field]} holds no PEM certificate`);
    try {
      return blocks.map((block) => new X509Certificate(block));
    } catch (error) {
      throw new ConfigError(flag, `${files[field]} holds a certificate that cannot be parsed (${(error as Error).message})`);
    }
  };
  certificates(material.ca, spec.ca);
  const [leaf] = certificates(material.cert, spec.cert);
  let key;
  try {
    key = createPrivateKey(material.key);
  } catch {
    throw new ConfigError(spec.key[1], `${files[spec.key[0]]} holds no readable PEM private key`);
  }
  if (!leaf!.checkPrivateKey(key)) throw new ConfigError(spec.key[1], `${files[spec.key[0]]} does not match the certificate in ${files[spec.cert[0]]}`);
}

/** Watches the files; calls `apply` with a side's material whenever it changed and is complete and valid. */
export function watchMaterial(files: Files, current: Record<Side, KeyPairWithCa>, apply: (side: Side, material: KeyPairWithCa) => void, log: Logger): () => void {
  const rejected: Partial<Record<Side, string>> = {};
  // Each side's files as last looked at: inode, size, modification and change times.
  const looks: Partial<Record<Side, string>> = {};
  let ticks = 0;
  const timer = setInterval(() => {
    const readAnyway = ++ticks % READ_EVERY === 0;
    for (const side of ["serving", "core"] as const) {
      const spec = SIDES[side];
      const paths = [spec.cert, spec.key, spec.ca].map(([field]) => files[field]);
      let fresh: KeyPairWithCa;
      try {
        // Synchronous, the look and the read: three small files of a memory-backed volume take
        // microseconds, and sent to libuv's thread pool they cost an idle gateway more CPU than
        // the work itself. Times as bigint nanoseconds: the millisecond fields run a conversion
        // that V8 compiled with TurboFan once the memory reducer's collections dropped its earlier
        // code, pulling about 5 MiB of TurboFan's own code into an idle gateway (memory-reducer.ts).
        const look = paths.map((path) => statSync(path, { bigint: true })).map((s) => `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`).join(" ");
        if (look === looks[side] && !readAnyway) continue;
        looks[side] = look;
        const [cert, key, ca] = paths.map((path) => readFileSync(path));
        fresh = { cert: cert!, key: key!, ca: ca! };
      } catch {
        continue; // a file briefly missing while the kubelet swaps the volume
      }
      const was = current[side];
      if (fresh.cert.equals(was.cert) && fresh.key.equals(was.key) && fresh.ca.equals(was.ca)) continue;
      try {
        check(fresh, spec, files);
      } catch (error) {
        const why = (error as Error).message;
        if (rejected[side] !== why) log.warn({ side, why }, "changed TLS files are not usable yet; keeping the current ones");
        rejected[side] = why;
        continue;
      }
      delete rejected[side];
      current[side] = fresh;
      apply(side, fresh);
      log.info({ side }, "TLS material reloaded");
    }
  }, RELOAD_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
