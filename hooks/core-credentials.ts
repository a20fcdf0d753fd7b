// The cluster etcd's CA and the gateways' client certificate towards it, from the related objects
// /customize asked for. Checked so that status says why the gateways cannot reach core etcd.
import type { Config } from "./config.ts";
import { configMapData, findObject, secretData, type ObjectsByType } from "./observed.ts";
import { keyMatches, parseCertificate, parsePrivateKey, splitPemBundle } from "./pki/parse.ts";

export type CoreCredentials = (
  | { ready: true; caPem: string; certPem: string; message: string }
  | { ready: false; reason: string; message: string; caPem?: string; certPem?: string }
) & {
  /** When the verdict changes by itself (the client certificate's validity starts or ends). */
  changesAt?: Date;
};

export function checkCoreCredentials(related: ObjectsByType | undefined, config: Config, now: Date): CoreCredentials {
  const ns = config.proxyNamespace;
  const caMap = findObject(related, "ConfigMap", ns, config.coreCaConfigMap);
  const clientSecret = findObject(related, "Secret", ns, config.coreClientSecret);
  if (!caMap) return { ready: false, reason: "CoreCAMissing", message: `ConfigMap ${ns}/${config.coreCaConfigMap} with the etcd CA (key ca.crt) does not exist` };
  if (!clientSecret) return { ready: false, reason: "CoreClientCertMissing", message: `Secret ${ns}/${config.coreClientSecret} with the proxy's etcd client certificate (tls.crt, tls.key) does not exist` };

  const caPem = configMapData(caMap)["ca.crt"] ?? "";
  const { "tls.crt": certPem = "", "tls.key": keyPem } = secretData(clientSecret);
  const found = { caPem, certPem };
  const cas = splitPemBundle(caPem).map(parseCertificate);
  if (cas.length === 0 || cas.some((ca) => ca === undefined)) {
    return { ready: false, reason: "CoreCAInvalid", message: `ConfigMap ${ns}/${config.coreCaConfigMap} key ca.crt holds no valid PEM certificates`, ...found };
  }
  const cert = parseCertificate(certPem);
  if (!cert) return { ready: false, reason: "CoreClientCertInvalid", message: `Secret ${ns}/${config.coreClientSecret} key tls.crt is not a single PEM certificate`, ...found };
  const changesAt = now < cert.notBefore ? cert.notBefore : now < cert.notAfter ? cert.notAfter : undefined;
  if (now >= cert.notAfter) return { ready: false, reason: "CoreClientCertExpired", message: `Secret ${ns}/${config.coreClientSecret}: the client certificate expired at ${cert.notAfter.toISOString()}`, ...found };
  if (now < cert.notBefore) return { ready: false, reason: "CoreClientCertNotYetValid", message: `Secret ${ns}/${config.coreClientSecret}: the client certificate is valid only from ${cert.notBefore.toISOString()}`, ...found, changesAt };
  if (!keyMatches(cert, parsePrivateKey(keyPem))) {
    return { ready: false, reason: "CoreClientKeyMismatch", message: `Secret ${ns}/${config.coreClientSecret}: tls.key is missing or does not match tls.crt`, ...found, changesAt };
  }
  return { ready: true, caPem, certPem, message: `etcd client certificate valid until ${cert.notAfter.toISOString()}`, changesAt };
}
