import { sync } from "./hooks/sync.ts";
import { loadConfig } from "./hooks/config.ts";
const config = loadConfig({ CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379" });
const parent = { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorage", metadata: { name: "sample-apiserver", generation: 1, uid: "u1" }, spec: { caCertConfigMap: [{ name: "etcd-serving-ca", namespace: "sample-system" }], clientCertSecret: [{ name: "etcd-client-cert", namespace: "sample-system" }] } };
const empty = { "Deployment.apps/v1": {}, "Service.v1": {}, "Secret.v1": {}, "ConfigMap.v1": {}, "PodDisruptionBudget.policy/v1": {}, "Job.batch/v1": {} };
const now = new Date("2026-11-22T10:00:00Z");
let t = performance.now();
const r1 = await sync({ parent, children: empty, related: {} }, config, now);
console.log("first", performance.now() - t);
const children: any = structuredClone(empty);
for (const c of r1.response.children) { const key = c.apiVersion.includes("/") ? `${c.kind}.${c.apiVersion}` : `${c.kind}.${c.apiVersion}`; children[key][`${c.metadata.namespace}/${c.metadata.name}`] = c; }
t = performance.now();
const r2 = await sync({ parent: { ...parent, status: r1.response.status as any }, children, related: {} }, config, new Date(now.getTime() + 1000));
console.log("second", performance.now() - t);
console.log(JSON.stringify(r1.response.children) === JSON.stringify(r2.response.children), JSON.stringify(r1.response.status) === JSON.stringify(r2.response.status), r2.response.resyncAfterSeconds, r2.report.events);
console.log(JSON.stringify(r2.response.status, null, 1));
console.log(r1.response.children.map(c => `${c.kind} ${c.metadata.namespace}/${c.metadata.name}`));
