// The "restricted" Pod Security Standard (which includes "baseline"), as the Pod Security
// admission controller applies it to a pod spec: the namespaces of this project enforce it, so a
// pod that breaks a rule here would be refused by the API server.
// Rules: https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Baseline, Restricted).
// Windows-only exemptions are left out: nothing here runs on Windows.

interface SecurityContext {
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  runAsNonRoot?: boolean;
  runAsUser?: number;
  procMount?: string;
  capabilities?: { add?: string[]; drop?: string[] };
  seccompProfile?: { type?: string };
  appArmorProfile?: { type?: string };
  seLinuxOptions?: { type?: string; user?: string; role?: string };
  windowsOptions?: { hostProcess?: boolean };
  sysctls?: { name: string; value?: string }[];
}

interface Container {
  name: string;
  ports?: { hostPort?: number }[];
  securityContext?: SecurityContext;
}

interface PodSpec {
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  securityContext?: SecurityContext;
  containers?: Container[];
  initContainers?: Container[];
  ephemeralContainers?: Container[];
  volumes?: Record<string, unknown>[];
}

const ALLOWED_VOLUME_TYPES = new Set(["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"]);
const SAFE_SYSCTLS = new Set([
  "kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.ping_group_range",
  "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
  "net.ipv4.tcp_keepalive_time",
  "net.ipv4.tcp_syncookies",
]);
const SELINUX_TYPES = new Set(["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"]);
const CONFINED_PROFILES = new Set(["RuntimeDefault", "Localhost"]);
const APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/";

/**
 * Every way the pod breaks the restricted profile, as "<Control>: <what>", the control named as
 * in the standard; [] when it complies. annotations are the pod template's (legacy AppArmor).
 */
export function restrictedViolations(podSpec: unknown, annotations: Record<string, string> = {}): string[] {
  const pod = (podSpec ?? {}) as PodSpec;
  const podContext = pod.securityContext ?? {};
  const containers = [
    ...(pod.containers ?? []).map((c) => ({ ...c, where: `container "${c.name}"` })),
    ...(pod.initContainers ?? []).map((c) => ({ ...c, where: `init container "${c.name}"` })),
    ...(pod.ephemeralContainers ?? []).map((c) => ({ ...c, where: `ephemeral container "${c.name}"` })),
  ];
  const problems: string[] = [];
  const fail = (control: string, what: string) => problems.push(`${control}: ${what}`);

  // Baseline
  for (const [where, context] of [["pod", podContext] as const, ...containers.map((c) => [c.where, c.securityContext ?? {}] as const)]) {
    if (context.windowsOptions?.hostProcess === true) fail("HostProcess", `${where} sets windowsOptions.hostProcess`);
    if (context.appArmorProfile?.type !== undefined && !CONFINED_PROFILES.has(context.appArmorProfile.type)) {
      fail("AppArmor", `${where} sets appArmorProfile.type ${context.appArmorProfile.type}`);
    }
    const seLinux = context.seLinuxOptions ?? {};
    if (seLinux.type !== undefined && !SELINUX_TYPES.has(seLinux.type)) fail("SELinux", `${where} sets seLinuxOptions.type ${seLinux.type}`);
    if (seLinux.user) fail("SELinux", `${where} sets seLinuxOptions.user`);
    if (seLinux.role) fail("SELinux", `${where} sets seLinuxOptions.role`);
  }
  for (const field of ["hostNetwork", "hostPID", "hostIPC"] as const) {
    if (pod[field] === true) fail("Host Namespaces", `spec.${field} is true`);
  }
  for (const volume of pod.volumes ?? []) {
    if (volume.hostPath !== undefined) fail("HostPath Volumes", `volume "${String(volume.name)}" is a hostPath`);
  }
  for (const [key, value] of Object.entries(annotations)) {
    if (key.startsWith(APPARMOR_ANNOTATION) && value !== "runtime/default" && !value.startsWith("localhost/")) {
      fail("AppArmor", `annotation ${key} is ${value}`);
    }
  }
  for (const sysctl of podContext.sysctls ?? []) {
    if (!SAFE_SYSCTLS.has(sysctl.name)) fail("Sysctls", `${sysctl.name} is not a safe sysctl`);
  }
  for (const c of containers) {
    const context = c.securityContext ?? {};
    if (context.privileged === true) fail("Privileged Containers", `${c.where} is privileged`);
    if ((c.ports ?? []).some((port) => port.hostPort !== undefined && port.hostPort !== 0)) fail("Host Ports", `${c.where} uses a hostPort`);
    if (context.procMount !== undefined && context.procMount !== "Default") fail("/proc Mount Type", `${c.where} sets procMount ${context.procMount}`);
  }

  // Restricted
  for (const volume of pod.volumes ?? []) {
    const types = Object.keys(volume).filter((key) => key !== "name" && key !== "hostPath");
    for (const type of types.filter((t) => !ALLOWED_VOLUME_TYPES.has(t))) fail("Volume Types", `volume "${String(volume.name)}" is of type ${type}`);
  }
  if (podContext.runAsUser === 0) fail("Running as Non-root user", "the pod sets runAsUser 0");
  if (podContext.seccompProfile?.type !== undefined && !CONFINED_PROFILES.has(podContext.seccompProfile.type)) {
    fail("Seccomp", `the pod sets seccompProfile.type ${podContext.seccompProfile.type}`);
  }
  for (const c of containers) {
    const context = c.securityContext ?? {};
    if (context.allowPrivilegeEscalation !== false) fail("Privilege Escalation", `${c.where} must set allowPrivilegeEscalation: false`);
    const nonRoot = context.runAsNonRoot ?? podContext.runAsNonRoot;
    if (nonRoot !== true) fail("Running as Non-root", `${c.where} must run with runAsNonRoot: true (on it or on the pod)`);
    if (context.runAsUser === 0) fail("Running as Non-root user", `${c.where} sets runAsUser 0`);
    const seccomp = context.seccompProfile?.type ?? podContext.seccompProfile?.type;
    if (seccomp === undefined || !CONFINED_PROFILES.has(seccomp)) {
      fail("Seccomp", `${c.where} must run with seccompProfile.type RuntimeDefault or Localhost (on it or on the pod), has ${seccomp ?? "none"}`);
    }
    if (!(context.capabilities?.drop ?? []).includes("ALL")) fail("Capabilities", `${c.where} must drop ALL capabilities`);
    for (const added of (context.capabilities?.add ?? []).filter((cap) => cap !== "NET_BIND_SERVICE")) {
      fail("Capabilities", `${c.where} adds ${added}; only NET_BIND_SERVICE may be added`);
    }
  }
  return problems;
}
