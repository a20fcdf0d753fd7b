// `npm run demo`: the whole system on this machine, with no cluster, for a person to try. The same
// bring-up as the end-to-end test (test/e2e/system.ts): core etcd, the host kube-apiserver,
// manifests/ installed, the hook server, the example EtcdStorage, its gateway and sample-apiserver
// storing through it. Ctrl-C stops every process and removes what it wrote.
import { mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { buildParts, part } from "../test/support/parts.ts";
import { stopAll, tempDir } from "../test/e2e/harness.ts";
import { REPO_ROOT, startSampleApiserver, startSystem, startTenant } from "../test/e2e/system.ts";

const TENANT = "sample-apiserver";
const started = Date.now();
const log = (line: string) => process.stdout.write(`[demo ${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${line}\n`);

// One stop, however many signals come (a terminal's Ctrl-C can reach the process more than once):
// exiting during the first would leave files behind.
let stopping: Promise<never> | undefined;
function stop(code: number): Promise<never> {
  stopping ??= (async () => {
    log("stopping every process and removing what the demo wrote");
    await stopAll().catch((error: unknown) => process.stderr.write(`${String(error)}\n`));
    process.exit(code);
  })();
  return stopping;
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));

try {
  await buildParts(log);
  const dir = await tempDir("etcdstorage-demo-");
  const system = await startSystem(dir, { log });
  log(`EtcdStorage ${TENANT} (manifests/example-etcdstorage.yaml)`);
  for (const args of [["create", "namespace", "sample-system"], ["apply", "-f", path.join(REPO_ROOT, "manifests/example-etcdstorage.yaml")]]) {
    const { code, stderr } = await system.host.kubectl(args);
    if (code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${stderr}`);
  }
  const tenant = await startTenant(system, TENANT, path.join(dir, "gateway"));
  await startSampleApiserver(system, tenant, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver") });

  const bin = path.join(dir, "bin");
  await mkdir(bin);
  await symlink(part("kubectl"), path.join(bin, "kubectl"));
  await symlink(part("etcdctl-3.6"), path.join(bin, "etcdctl"));
  const flunder = path.join(dir, "flunder.yaml");
  await writeFile(flunder, "apiVersion: wardle.example.com/v1alpha1\nkind: Flunder\nmetadata:\n  name: my-flunder\n  namespace: default\n");
  const core = system.host.core;
  const etcdctl = `etcdctl --endpoints=${core.endpoint} --cacert=${core.caFile} --cert=${core.certFile} --key=${core.keyFile}`;
  process.stdout.write(`
Ready in ${((Date.now() - started) / 1000).toFixed(0)} s. In another terminal:

  export PATH=${bin}:$PATH KUBECONFIG=${system.host.kubeconfig}

  kubectl create -f ${flunder}
  ${etcdctl} get --prefix --keys-only /etcdstorage/${TENANT}/
  kubectl get etcdstorages

The Flunder goes through the host's aggregator to sample-apiserver, which stores it through the
tenant's gateway under /etcdstorage/${TENANT}/ in core etcd. Ctrl-C stops everything.
`);
} catch (error) {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  await stop(1);
}
