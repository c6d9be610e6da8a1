// A real Kubernetes control plane for tests: etcd + kube-apiserver (RBAC on) + kwok (simulated
// nodes and pods, with logs/exec/port-forward), all on loopback, from the binaries that
// tools/control-plane/build.sh builds (`npm run control-plane`). Nothing is mocked.
//
//   const cp = await startControlPlane();
//   try { await cp.runKubectl(["get", "ns"]); } finally { await cp.stop(); }
//
// Every child runs in its own process group under a small watchdog that ends it when this Node.js
// process goes away (even by SIGKILL: the watchdog reads a pipe from us and sees EOF), and
// stop() ends the groups, then removes the temporary folder. A process 'exit' hook ends what
// is still running as a last resort.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, openSync, closeSync, readFileSync, rmSync, statSync } from "node:fs";
import { appendFile, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export const BINARIES = ["kube-apiserver", "kubectl", "etcd", "kwok"] as const;
export type BinaryName = (typeof BINARIES)[number];

/** The agent's identity: a real ServiceAccount, authenticated by a TokenRequest token. */
export const AGENT_NAMESPACE = "gitlab-agent";
export const AGENT_SERVICE_ACCOUNT = "gitlab-agent";
export const AGENT_USERNAME = `system:serviceaccount:${AGENT_NAMESPACE}:${AGENT_SERVICE_ACCOUNT}`;
/** The simulated node that kwok manages; pods name it in spec.nodeName (no scheduler runs). */
export const KWOK_NODE_NAME = "kwok-node-0";

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
  verbs: string[];
}

export interface ControlPlaneOptions {
  /** Aborting stops the control plane (or the start in progress). */
  signal?: AbortSignal;
  /** Folder with the binaries; default: the cache folder build.sh uses. */
  binDir?: string;
  /** Start kwok and a Ready node named KWOK_NODE_NAME (default true). */
  kwok?: boolean;
  /** Cluster-wide rules granted to the agent identity besides impersonation. */
  agentRules?: PolicyRule[];
  /** Keep the temporary folder (logs, certs, etcd data) after stop(), for debugging. */
  keepDir?: boolean;
  /** Milliseconds for each component to become ready (default 90 s). */
  readyTimeoutMs?: number;
  /**
   * Pod ports that kwok's port-forward connects to a TCP address (every pod); other ports run
   * `cat`, an echo.
   */
  portForwards?: PortForwardTarget[];
  /**
   * Write the API server's audit log (every request at level Metadata: user, impersonated user,
   * verb, the request URI as received, response code) to auditLogPath. Default false.
   */
  auditLog?: boolean;
}

/** `kubectl port-forward` to `podPort` of any kwok pod reaches `address:port` (default 127.0.0.1). */
export interface PortForwardTarget {
  podPort: number;
  port: number;
  address?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Default: the admin kubeconfig. */
  kubeconfig?: string;
  /** Written to kubectl's standard input (for `apply -f -`). */
  input?: string;
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

export interface ControlPlane {
  /** Temporary folder with certificates, kubeconfigs, component logs (*.log) and etcd data. */
  dir: string;
  apiServerUrl: string;
  caCertPath: string;
  /** Admin (client certificate in group system:masters). */
  kubeconfigPath: string;
  /** The agent's ServiceAccount token: impersonation rights plus options.agentRules only. */
  agentKubeconfigPath: string;
  agentToken: string;
  agentUsername: string;
  /** Path of the kubectl binary (same version as the API server). */
  kubectl: string;
  binaries: Record<BinaryName, string>;
  /** True when kwok runs and KWOK_NODE_NAME is Ready. */
  kwokRunning: boolean;
  /** The API server's audit log (JSON lines, audit.k8s.io/v1 Events), with options.auditLog. */
  auditLogPath: string | undefined;
  nodeName: string | undefined;
  /** CRI-format log file that kwok serves as every container's log (`kubectl logs`). */
  podLogsFile: string;
  /**
   * Working directory of `kubectl exec` in every kwok pod: kwok runs the command as a local
   * process here, so relative paths of `kubectl cp` land in (and are read from) this folder.
   */
  execDir: string;
  /**
   * Appends a line to podLogsFile (visible to `kubectl logs` at once, `-f` included, and to
   * `kubectl attach`, which kwok serves by following the same file from its end).
   */
  appendPodLog(line: string, stream?: "stdout" | "stderr"): Promise<void>;
  /** Runs the real kubectl (admin kubeconfig unless options.kubeconfig). */
  runKubectl(args: string[], options?: KubectlOptions): Promise<RunResult>;
  /** Ends every child process (process groups) and removes the temporary folder. Idempotent. */
  stop(): Promise<void>;
}

/** The cache folder build.sh builds into (same key computation: asks build.sh itself). */
export function controlPlaneBinDir(): string {
  const r = spawnSync("bash", [join(here, "build.sh"), "--print-dir"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`tools/control-plane/build.sh --print-dir failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** The binaries' paths, or an Error telling how to build them. */
export function findBinaries(binDir = controlPlaneBinDir()): Record<BinaryName, string> {
  const missing = BINARIES.filter((b) => !isExecutable(join(binDir, b)));
  if (missing.length > 0 || !existsSync(join(binDir, "control-plane.stamp"))) {
    throw new Error(
      `Kubernetes control-plane binaries are not built (missing in ${binDir}: ` +
        `${missing.length ? missing.join(", ") : "control-plane.stamp"}). ` +
        "Run `npm run control-plane` (tools/control-plane/build.sh) first; it builds them once from the Go module proxy.",
    );
  }
  return Object.fromEntries(BINARIES.map((b) => [b, join(binDir, b)])) as Record<BinaryName, string>;
}

function isExecutable(path: string): boolean {
  try {
    return statSync(path).isFile() && (statSync(path).mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Process supervision

interface Supervised {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: Promise<number | null>;
  exitCode: number | null | undefined; // undefined while running
}

/** Process groups still alive, across all control planes of this process. */
const liveGroups = new Set<number>();
let hooksInstalled = false;

function killGroupsNow(): void {
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  liveGroups.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", killGroupsNow);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const handler = () => {
      killGroupsNow();
      // Keep the default behaviour (terminate) when nobody else handles the signal.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

// The watchdog: runs the binary in the background, ends it when our pipe on fd 0 closes (this
// process is gone, however it ended), passes SIGTERM on, and exits only once it has reaped the
// binary, so that the watchdog's exit means the binary is gone.
const WATCHDOG = [
  "exec 3<&0 0</dev/null",
  '"$@" 3<&- &',
  "pid=$!",
  "trap 'kill -TERM $pid 2>/dev/null' TERM INT HUP",
  "( cat <&3 >/dev/null; kill -TERM $pid 2>/dev/null; for i in $(seq 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL $pid 2>/dev/null ) &",
  "exec 3<&-",
  "while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || exit $rc; done",
].join("\n");

function supervise(name: string, command: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): Supervised {
  const fd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn("bash", ["-c", WATCHDOG, name, command, ...args], {
      stdio: ["pipe", fd, fd],
      detached: true, // own process group: stop() kills it whole
      env: env ?? childEnv(),
    });
  } finally {
    closeSync(fd);
  }
  const pgid = child.pid!;
  liveGroups.add(pgid);
  child.stdin!.on("error", () => {});
  child.unref(); // the watchdog pipe must not keep mocha alive
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  const s: Supervised = {
    name,
    child,
    logPath,
    exitCode: undefined,
    exited: new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        s.exitCode = code ?? (signal ? 128 : null);
        resolve(s.exitCode);
      });
      child.on("error", () => {
        s.exitCode = 127;
        resolve(127);
      });
    }),
  };
  return s;
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    /* gone */
  }
}

/**
 * SIGTERM to the whole process group, SIGKILL after graceMs. The watchdog exits only after it has
 * reaped the binary, so its exit is the signal that the binary is gone.
 */
async function terminate(s: Supervised, graceMs = 5000): Promise<void> {
  const pgid = s.child.pid!;
  const waitExit = async (ms: number) => {
    if (s.exitCode !== undefined) return;
    const timer = delay(ms);
    await Promise.race([s.exited, timer.promise]);
    timer.cancel();
  };
  signalGroup(pgid, "SIGTERM");
  await waitExit(graceMs);
  // Whatever is left in the group (the pipe reader, a binary that ignored SIGTERM) ends now.
  signalGroup(pgid, "SIGKILL");
  await waitExit(2000);
  liveGroups.delete(pgid);
}

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.KUBECONFIG;
  return env;
}

function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function delay(ms: number): { promise: Promise<void>; cancel(): void } {
  let t: NodeJS.Timeout;
  const promise = new Promise<void>((resolve) => {
    t = setTimeout(resolve, ms);
  });
  return { promise, cancel: () => clearTimeout(t) };
}

function run(command: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? childEnv(), cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

async function mustRun(command: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const r = await run(command, args, opts);
  if (r.code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Ports, certificates, kubeconfigs

/** Distinct free loopback ports (bound then released; a start that loses a race is retried). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => resolve(srv));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await mustRun("openssl", args, { cwd: dir });
}

/** A certificate signed by ca.crt: EC P-256, valid 2 days. */
async function issue(dir: string, name: string, subject: string, ext: string): Promise<void> {
  await openssl(dir, ["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
  await writeFile(join(dir, `${name}.ext`), ext);
  await openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
    "-days", "2", "-sha256", "-out", `${name}.crt`, "-extfile", `${name}.ext`]);
}

async function makePki(pki: string): Promise<void> {
  await mkdir(pki, { recursive: true });
  await openssl(pki, ["req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-sha256", "-subj", "/CN=kasbridge-test-ca",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  const server = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
  const client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n";
  await issue(pki, "apiserver", "/CN=kube-apiserver",
    `${server}subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n`);
  await issue(pki, "kwok", `/CN=${KWOK_NODE_NAME}`, `${server}subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:${KWOK_NODE_NAME}\n`);
  await issue(pki, "admin", "/O=system:masters/CN=kasbridge-admin", client);
  await issue(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client);
  // ServiceAccount token signing key pair.
  await openssl(pki, ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "sa.key"]);
  await openssl(pki, ["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

function kubeconfig(server: string, caPath: string, user: string, auth: Record<string, string>): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "kasbridge-test", cluster: { server, "certificate-authority": caPath } }],
    users: [{ name: user, user: auth }],
    contexts: [{ name: user, context: { cluster: "kasbridge-test", user } }],
    "current-context": user,
  }, null, 2);
}

function httpsGet(url: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, timeout: 3000 }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// kwok configuration: our own minimal stages (node Ready, pod Running, pod deletion) and the
// debugging endpoints for every pod: logs and attach from one CRI-format file, exec as local
// commands in execDir, port-forward to the configured TCP targets or else to an echo command.

function kwokConfig(podLogsFile: string, execDir: string, portForwards: PortForwardTarget[]): string {
  const targets = portForwards
    .map((f) => `  - ports: [${f.podPort}]\n    target: {port: ${f.port}, address: ${JSON.stringify(f.address ?? "127.0.0.1")}}\n`)
    .join("");
  return `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: "simulated by kwok"
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      - type: Hostname
        address: {{ .metadata.name | Quote }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ NodePort }}
      allocatable: {cpu: "32", memory: 256Gi, pods: "250"}
      capacity: {cpu: "32", memory: 256Gi, pods: "250"}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        bootID: ""
        machineID: ""
        systemUUID: ""
        osImage: kwok
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: {{ printf "kwok://%s" .image | Quote }}
        containerID: {{ printf "kwok://%s" .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: all-pods
spec:
  logs:
  - logsFile: ${JSON.stringify(podLogsFile)}
    follow: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: all-pods
spec:
  execs:
  - local:
      workDir: ${JSON.stringify(execDir)}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterAttach
metadata:
  name: all-pods
spec:
  attaches:
  - logsFile: ${JSON.stringify(podLogsFile)}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: all-pods
spec:
  forwards:
${targets}  - command: ["cat"]
`;
}

// ---------------------------------------------------------------------------------------------

interface ClusterRoleJson {
  metadata: { name: string; labels?: Record<string, string> };
  rules?: PolicyRule[];
  aggregationRule?: { clusterRoleSelectors?: Array<{ matchLabels?: Record<string, string> }> };
}

/**
 * Fills the aggregated ClusterRoles (admin, edit, view, ...) once, as kube-controller-manager's
 * clusterrole-aggregation controller would: no controller-manager runs here, so without this
 * `--clusterrole=view` would grant nothing. Roles created later are not aggregated.
 */
async function aggregateClusterRoles(kubectl: (args: string[], o?: KubectlOptions) => Promise<RunResult>): Promise<void> {
  const roles = (JSON.parse((await kubectl(["get", "clusterroles", "-o", "json"])).stdout) as { items: ClusterRoleJson[] }).items;
  const matches = (role: ClusterRoleJson, sel: Record<string, string>) =>
    Object.entries(sel).every(([k, v]) => role.metadata.labels?.[k] === v);
  const aggregated = roles.filter((r) => r.aggregationRule?.clusterRoleSelectors?.length);
  // Aggregated roles nest (view -> edit -> admin): repeat until nothing changes.
  for (let pass = 0, changed = true; changed && pass < 10; pass++) {
    changed = false;
    for (const role of aggregated) {
      const selectors = role.aggregationRule!.clusterRoleSelectors!;
      const rules: PolicyRule[] = [];
      const seen = new Set<string>();
      for (const source of roles) {
        if (source === role || !selectors.some((sel) => matches(source, sel.matchLabels ?? {}))) continue;
        for (const rule of source.rules ?? []) {
          const key = JSON.stringify(rule);
          if (!seen.has(key)) {
            seen.add(key);
            rules.push(rule);
          }
        }
      }
      if (JSON.stringify(rules) !== JSON.stringify(role.rules ?? [])) {
        role.rules = rules;
        changed = true;
      }
    }
  }
  if (aggregated.length) {
    await kubectl(["replace", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: aggregated.map((r) => ({ apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", ...r })) }) });
  }
}

const IMPERSONATE_RULES: PolicyRule[] = [
  { apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] },
  { apiGroups: ["authentication.k8s.io"], resources: ["userextras/*", "uids"], verbs: ["impersonate"] },
];

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const binaries = findBinaries(options.binDir);
  options.signal?.throwIfAborted();
  installHooks();
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startOnce(binaries, options);
    } catch (err) {
      lastError = err;
      // A port picked as free was taken before the component bound it: try new ports.
      if (!(err instanceof PortConflict) || options.signal?.aborted) break;
    }
  }
  throw lastError;
}

class PortConflict extends Error {}

async function startOnce(binaries: Record<BinaryName, string>, options: ControlPlaneOptions): Promise<ControlPlane> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 90_000;
  const dir = await mkdtemp(join(tmpdir(), "kasbridge-control-plane-"));
  const pki = join(dir, "pki");
  const procs: Supervised[] = [];
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      options.signal?.removeEventListener("abort", onAbort);
      for (const p of [...procs].reverse()) await terminate(p);
      if (!options.keepDir) rmSync(dir, { recursive: true, force: true });
    })());
  const onAbort = () => void stop();
  // Children start only while no stop() has begun (an abort may come in the middle of the start).
  const start = (...args: Parameters<typeof supervise>): void => {
    options.signal?.throwIfAborted();
    if (stopped) throw new Error("control plane stopped during start");
    procs.push(supervise(...args));
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const checkAlive = () => {
    options.signal?.throwIfAborted();
    for (const p of procs) {
      if (p.exitCode !== undefined) {
        const log = tail(p.logPath);
        const Err = /address already in use/i.test(log) ? PortConflict : Error;
        throw new Err(`${p.name} exited (${p.exitCode}) during start; ${p.logPath}:\n${log}`);
      }
    }
  };
  const waitFor = async (what: string, probe: () => Promise<boolean>) => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      checkAlive();
      if (await probe().catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new Error(`${what} not ready after ${readyTimeoutMs} ms; logs in ${dir}:\n${procs.map((p) => `--- ${p.name}\n${tail(p.logPath, 15)}`).join("\n")}`);
      }
      await delay(200).promise;
    }
  };

  try {
    await makePki(pki);
    const caCertPath = join(pki, "ca.crt");
    const ca = readFileSync(caCertPath);
    const [etcdClientPort, etcdPeerPort, apiPort, kwokPort] = await freePorts(4);

    // etcd
    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    start("etcd", binaries.etcd, [
      "--name=control-plane", `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`, `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=control-plane=${peerUrl}`, "--initial-cluster-state=new",
      "--unsafe-no-fsync", "--log-level=warn",
    ], join(dir, "etcd.log"));
    await waitFor("etcd", async () => {
      const res = await fetch(`${etcdUrl}/health`);
      return res.ok && (await res.json() as { health?: string }).health === "true";
    });

    // kube-apiserver
    const apiServerUrl = `https://127.0.0.1:${apiPort}`;
    let auditLogPath: string | undefined;
    const auditArgs: string[] = [];
    if (options.auditLog) {
      auditLogPath = join(dir, "audit.log");
      const policyPath = join(dir, "audit-policy.yaml");
      await writeFile(policyPath, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n");
      // The log backend writes each event before the request completes (mode blocking).
      auditArgs.push(`--audit-policy-file=${policyPath}`, `--audit-log-path=${auditLogPath}`, "--audit-log-mode=blocking");
    }
    start("kube-apiserver", binaries["kube-apiserver"], [
      ...auditArgs,
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", `--secure-port=${apiPort}`,
      `--cert-dir=${join(dir, "apiserver")}`,
      `--tls-cert-file=${join(pki, "apiserver.crt")}`, `--tls-private-key-file=${join(pki, "apiserver.key")}`,
      `--client-ca-file=${caCertPath}`,
      "--authorization-mode=RBAC",
      "--anonymous-auth=true", // /readyz, /livez, /version for system:public-info-viewer only
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${join(pki, "sa.pub")}`,
      `--service-account-signing-key-file=${join(pki, "sa.key")}`,
      "--service-cluster-ip-range=10.96.0.0/16",
      `--kubelet-client-certificate=${join(pki, "apiserver-kubelet-client.crt")}`,
      `--kubelet-client-key=${join(pki, "apiserver-kubelet-client.key")}`,
      `--kubelet-certificate-authority=${caCertPath}`,
      "--kubelet-preferred-address-types=InternalIP",
      // No controller-manager runs, so no "default" ServiceAccount appears in new namespaces:
      // pods are admitted without one.
      "--disable-admission-plugins=ServiceAccount",
      "--endpoint-reconciler-type=none",
      "--allow-privileged=true",
      "--profiling=false",
      "--v=1",
    ], join(dir, "kube-apiserver.log"));
    await waitFor("kube-apiserver", async () => {
      const r = await httpsGet(`${apiServerUrl}/readyz`, ca);
      return r.status === 200;
    });

    const kubeconfigPath = join(dir, "admin.kubeconfig");
    await writeFile(kubeconfigPath, kubeconfig(apiServerUrl, caCertPath, "admin", {
      "client-certificate": join(pki, "admin.crt"),
      "client-key": join(pki, "admin.key"),
    }));
    const kubectlEnv = childEnv({ KUBECACHEDIR: join(dir, "kube-cache"), KUBECONFIG: kubeconfigPath });
    const kubectl = async (args: string[], o: KubectlOptions = {}): Promise<RunResult> => {
      const r = await run(binaries.kubectl, [`--kubeconfig=${o.kubeconfig ?? kubeconfigPath}`, ...args], {
        input: o.input, env: kubectlEnv, timeoutMs: o.timeoutMs ?? 60_000,
      });
      if (r.code !== 0 && !o.allowFailure) throw new Error(`kubectl ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
      return r;
    };
    const apply = (objects: object[]) => kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }) });

    await aggregateClusterRoles(kubectl);

    // The agent's identity: ServiceAccount + impersonation (and options.agentRules), token via TokenRequest.
    await apply([
      { apiVersion: "v1", kind: "Namespace", metadata: { name: AGENT_NAMESPACE } },
      { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE } },
      { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: "gitlab-agent-impersonate" }, rules: IMPERSONATE_RULES },
      { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name: "gitlab-agent-impersonate" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "gitlab-agent-impersonate" },
        subjects: [{ kind: "ServiceAccount", name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE }] },
      ...(options.agentRules?.length ? [
        { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: "gitlab-agent-extra" }, rules: options.agentRules },
        { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name: "gitlab-agent-extra" },
          roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "gitlab-agent-extra" },
          subjects: [{ kind: "ServiceAccount", name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE }] },
      ] : []),
    ]);
    const agentToken = (await kubectl(["create", "token", AGENT_SERVICE_ACCOUNT, "-n", AGENT_NAMESPACE, "--duration=48h"])).stdout.trim();
    const agentKubeconfigPath = join(dir, "agent.kubeconfig");
    await writeFile(agentKubeconfigPath, kubeconfig(apiServerUrl, caCertPath, AGENT_SERVICE_ACCOUNT, { token: agentToken }));

    // kwok: a simulated node that runs pods and serves their logs/exec/port-forward.
    const podLogsFile = join(dir, "pod-logs", "containers.log");
    const execDir = join(dir, "exec");
    await mkdir(dirname(podLogsFile), { recursive: true });
    await mkdir(execDir, { recursive: true });
    await writeFile(podLogsFile, "");
    const appendPodLog = (line: string, stream: "stdout" | "stderr" = "stdout") =>
      appendFile(podLogsFile, `${new Date().toISOString()} ${stream} F ${line}\n`);
    let kwokRunning = false;
    if (options.kwok !== false) {
      const kwokConfigPath = join(dir, "kwok.yaml");
      await writeFile(kwokConfigPath, kwokConfig(podLogsFile, execDir, options.portForwards ?? []));
      start("kwok", binaries.kwok, [
        `--config=${kwokConfigPath}`, `--kubeconfig=${kubeconfigPath}`,
        "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=127.0.0.1", `--node-port=${kwokPort}`, `--server-address=127.0.0.1:${kwokPort}`,
        `--tls-cert-file=${join(pki, "kwok.crt")}`, `--tls-private-key-file=${join(pki, "kwok.key")}`,
        "--cidr=10.244.0.1/16",
      ], join(dir, "kwok.log"), childEnv({ HOME: dir }));
      await waitFor("kwok", async () => (await httpsGet(`https://127.0.0.1:${kwokPort}/healthz`, ca)).status === 200);
      await apply([{
        apiVersion: "v1", kind: "Node",
        metadata: {
          name: KWOK_NODE_NAME,
          annotations: { "kwok.x-k8s.io/node": "fake" },
          labels: { type: "kwok", "kubernetes.io/hostname": KWOK_NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
        },
      }]);
      await waitFor(`node ${KWOK_NODE_NAME}`, async () => {
        const r = await kubectl(["get", "node", KWOK_NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"], { allowFailure: true });
        return r.stdout.trim() === "True";
      });
      kwokRunning = true;
    }

    checkAlive();
    return {
      dir,
      apiServerUrl,
      caCertPath,
      kubeconfigPath,
      agentKubeconfigPath,
      agentToken,
      agentUsername: AGENT_USERNAME,
      kubectl: binaries.kubectl,
      binaries,
      kwokRunning,
      auditLogPath,
      nodeName: kwokRunning ? KWOK_NODE_NAME : undefined,
      podLogsFile,
      execDir,
      appendPodLog,
      runKubectl: kubectl,
      stop,
    };
  } catch (err) {
    await stop();
    // An abort in the middle of a step makes that step fail in its own way: report the abort.
    if (options.signal?.aborted) throw options.signal.reason;
    throw err;
  }
}
