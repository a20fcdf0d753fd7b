import assert from "node:assert/strict";
import { test } from "node:test";
import { restrictedViolations } from "../support/pod-security.ts";

// Pods are built as plain JSON and broken field by field: a loose type keeps each case one line.
type Pod = any;

// GIVEN a pod that meets the restricted profile, with one container of each kind
function compliantPod(): Pod {
  const container = (name: string) => ({
    name,
    image: "example:1",
    ports: [{ containerPort: 8080 }],
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } },
  });
  return {
    securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: "RuntimeDefault" } },
    containers: [container("main")],
    initContainers: [container("init")],
    ephemeralContainers: [container("debug")],
    volumes: [
      { name: "config", configMap: { name: "c" } },
      { name: "tls", secret: { secretName: "s" } },
      { name: "scratch", emptyDir: {} },
      { name: "token", projected: { sources: [] } },
    ],
  };
}

test("a compliant pod has no violations", () => {
  assert.deepEqual(restrictedViolations(compliantPod()), []);
});

// WHEN one rule is broken THEN that control, and only it, is reported.
// A case may return the pod template's annotations (the legacy AppArmor control reads them).
const breaking: [control: string, description: string, breakIt: (pod: Pod) => Record<string, string> | void][] = [
  ["HostProcess", "a Windows host process", (pod) => void (pod.securityContext.windowsOptions = { hostProcess: true })],
  ["Host Namespaces", "hostNetwork", (pod) => void (pod.hostNetwork = true)],
  ["Host Namespaces", "hostPID", (pod) => void (pod.hostPID = true)],
  ["Host Namespaces", "hostIPC", (pod) => void (pod.hostIPC = true)],
  ["Privileged Containers", "a privileged init container", (pod) => void (pod.initContainers[0].securityContext.privileged = true)],
  ["Capabilities", "an added SYS_ADMIN", (pod) => void (pod.containers[0].securityContext.capabilities.add = ["SYS_ADMIN"])],
  ["Capabilities", "an added CHOWN (baseline allows it, restricted does not)", (pod) => void (pod.containers[0].securityContext.capabilities.add = ["CHOWN"])],
  ["Capabilities", "ALL not dropped", (pod) => void (pod.ephemeralContainers[0].securityContext.capabilities.drop = ["NET_RAW"])],
  ["HostPath Volumes", "a hostPath volume", (pod) => void pod.volumes.push({ name: "host", hostPath: { path: "/" } })],
  ["Host Ports", "a hostPort", (pod) => void (pod.containers[0].ports[0].hostPort = 8080)],
  ["AppArmor", "an Unconfined profile on the pod", (pod) => void (pod.securityContext.appArmorProfile = { type: "Unconfined" })],
  ["AppArmor", "an Unconfined profile on a container", (pod) => void (pod.containers[0].securityContext.appArmorProfile = { type: "Unconfined" })],
  ["AppArmor", "the legacy unconfined annotation", () => ({ "container.apparmor.security.beta.kubernetes.io/main": "unconfined" })],
  ["SELinux", "a custom SELinux type", (pod) => void (pod.securityContext.seLinuxOptions = { type: "spc_t" })],
  ["SELinux", "an SELinux user", (pod) => void (pod.containers[0].securityContext.seLinuxOptions = { user: "system_u" })],
  ["SELinux", "an SELinux role", (pod) => void (pod.containers[0].securityContext.seLinuxOptions = { role: "system_r" })],
  ["/proc Mount Type", "an unmasked /proc", (pod) => void (pod.containers[0].securityContext.procMount = "Unmasked")],
  ["Sysctls", "an unsafe sysctl", (pod) => void (pod.securityContext.sysctls = [{ name: "kernel.msgmax", value: "1" }])],
  ["Volume Types", "an nfs volume", (pod) => void pod.volumes.push({ name: "nfs", nfs: { server: "x", path: "/" } })],
  ["Volume Types", "a gitRepo volume", (pod) => void pod.volumes.push({ name: "git", gitRepo: { repository: "x" } })],
  ["Privilege Escalation", "allowPrivilegeEscalation unset", (pod) => void delete pod.containers[0].securityContext.allowPrivilegeEscalation],
  ["Privilege Escalation", "allowPrivilegeEscalation true", (pod) => void (pod.initContainers[0].securityContext.allowPrivilegeEscalation = true)],
  ["Running as Non-root", "runAsNonRoot set nowhere", (pod) => void delete pod.securityContext.runAsNonRoot],
  ["Running as Non-root", "a container overriding runAsNonRoot to false", (pod) => void (pod.containers[0].securityContext.runAsNonRoot = false)],
  ["Running as Non-root user", "runAsUser 0 on the pod", (pod) => void (pod.securityContext.runAsUser = 0)],
  ["Running as Non-root user", "runAsUser 0 on a container", (pod) => void (pod.containers[0].securityContext.runAsUser = 0)],
  ["Seccomp", "no seccomp profile", (pod) => void delete pod.securityContext.seccompProfile],
  ["Seccomp", "an Unconfined pod profile", (pod) => void (pod.securityContext.seccompProfile.type = "Unconfined")],
  ["Seccomp", "an Unconfined container profile", (pod) => void (pod.containers[0].securityContext.seccompProfile = { type: "Unconfined" })],
];

for (const [control, description, breakIt] of breaking) {
  test(`${control}: ${description} is a violation of that control only`, () => {
    const pod = compliantPod();
    const annotations = breakIt(pod) ?? {};
    const violations = restrictedViolations(pod, annotations);
    assert.ok(violations.length > 0, "expected a violation");
    for (const violation of violations) assert.ok(violation.startsWith(`${control}: `), violation);
  });
}

// Values the standard explicitly allows must not be reported.
const allowed: [description: string, change: (pod: Pod) => void][] = [
  ["runAsNonRoot and seccomp on every container instead of the pod", (pod) => {
    pod.securityContext = {};
    for (const c of [...pod.containers, ...pod.initContainers, ...pod.ephemeralContainers]) {
      Object.assign(c.securityContext, { runAsNonRoot: true, seccompProfile: { type: "Localhost", localhostProfile: "p.json" } });
    }
  }],
  ["NET_BIND_SERVICE added", (pod) => (pod.containers[0].securityContext.capabilities.add = ["NET_BIND_SERVICE"])],
  ["hostPort 0", (pod) => (pod.containers[0].ports[0].hostPort = 0)],
  ["a safe sysctl", (pod) => (pod.securityContext.sysctls = [{ name: "net.ipv4.ip_unprivileged_port_start", value: "0" }])],
  ["SELinux type container_t with a level", (pod) => (pod.securityContext.seLinuxOptions = { type: "container_t", level: "s0:c1,c2" })],
  ["AppArmor RuntimeDefault and Localhost", (pod) => {
    pod.securityContext.appArmorProfile = { type: "RuntimeDefault" };
    pod.containers[0].securityContext.appArmorProfile = { type: "Localhost", localhostProfile: "p" };
  }],
  ["procMount Default", (pod) => (pod.containers[0].securityContext.procMount = "Default")],
  ["every allowed volume type", (pod) => {
    const types = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    pod.volumes = types.map((type) => ({ name: type.toLowerCase(), [type]: {} }));
  }],
];

for (const [description, change] of allowed) {
  test(`allowed: ${description}`, () => {
    const pod = compliantPod();
    change(pod);
    assert.deepEqual(restrictedViolations(pod, { "container.apparmor.security.beta.kubernetes.io/main": "runtime/default" }), []);
  });
}
