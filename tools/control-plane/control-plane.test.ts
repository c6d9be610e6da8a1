// The test-time control plane is real: etcd + kube-apiserver with RBAC, kwok running pods, the
// real kubectl, and with `controllers` the real kube-controller-manager and kube-scheduler. Needs
// the binaries from `npm run control-plane`; without them this test fails (it does not skip) and
// says so.
import { expect } from "chai";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { waitFor } from "@kasbridge/testing/wait";
import { AGENT_USERNAME, KWOK_NODE_NAME, STORAGE_CLASS, findBinaries, startControlPlane, type ControlPlane } from "./control-plane.js";

describe("tools/control-plane: etcd + kube-apiserver (RBAC) + kwok", function () {
  this.timeout(180_000);
  let cp: ControlPlane;

  before(async function () {
    findBinaries(); // throws "... Run `npm run control-plane` ..." when absent
    const t0 = Date.now();
    cp = await startControlPlane();
    console.log(`      control plane ready in ${Date.now() - t0} ms at ${cp.apiServerUrl}`);
  });
  after(async () => {
    if (cp) await stopAndCheck(cp);
  });

  it("serves the real kubectl with the admin identity", async () => {
    const ns = await cp.runKubectl(["get", "ns", "-o", "name"]);
    expect(ns.stdout).to.include("namespace/default").and.include("namespace/kube-system").and.include("namespace/gitlab-agent");
    const version = await cp.runKubectl(["version", "-o", "json"]);
    expect(JSON.parse(version.stdout).serverVersion.gitVersion).to.match(/^v1\.\d+\.\d+/);
  });

  it("runs a pod on the kwok node and serves its logs, exec and port-forward", async () => {
    await cp.runKubectl(["create", "namespace", "pods"]);
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1", kind: "Pod",
        metadata: { name: "web", namespace: "pods" },
        spec: { nodeName: KWOK_NODE_NAME, containers: [{ name: "web", image: "registry.example/web:1" }] },
      }),
    });
    await cp.runKubectl(["wait", "-n", "pods", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=60s"]);
    const pod = JSON.parse((await cp.runKubectl(["get", "-n", "pods", "pod/web", "-o", "json"])).stdout);
    expect(pod.status.containerStatuses[0].ready).to.equal(true);
    expect(pod.status.podIP).to.match(/^10\.244\./);

    await cp.appendPodLog("hello from a kwok container");
    await cp.appendPodLog("second line", "stderr");
    const logs = await cp.runKubectl(["logs", "-n", "pods", "web"]);
    expect(logs.stdout).to.equal("hello from a kwok container\nsecond line\n");

    const exec = await cp.runKubectl(["exec", "-n", "pods", "web", "--", "echo", "exec works"]);
    expect(exec.stdout.trim()).to.equal("exec works");

    // Port-forward reaches kwok's forward for every port: `cat`, an echo.
    const pf = spawn(cp.kubectl, [`--kubeconfig=${cp.kubeconfigPath}`, "port-forward", "-n", "pods", "pod/web", ":8080"], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const localPort = await new Promise<number>((resolve, reject) => {
        let out = "";
        pf.stdout.setEncoding("utf8").on("data", (d: string) => {
          out += d;
          const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        pf.on("exit", (code) => reject(new Error(`kubectl port-forward exited ${code}: ${out}`)));
      });
      const echoed = await new Promise<string>((resolve, reject) => {
        const socket = connect(localPort, "127.0.0.1", () => socket.write("ping\n"));
        socket.setEncoding("utf8").on("data", (d: string) => {
          resolve(d);
          socket.destroy();
        });
        socket.on("error", reject);
      });
      expect(echoed).to.equal("ping\n");
    } finally {
      pf.kill();
    }

    await cp.runKubectl(["delete", "-n", "pods", "pod/web", "--wait=true", "--timeout=60s"]);
  });

  it("enforces RBAC: the agent only impersonates; ci_job users see what RoleBindings grant", async () => {
    await cp.runKubectl(["create", "namespace", "team-a"]);
    await cp.runKubectl(["create", "namespace", "team-b"]);
    // gitlab:ci_job:2 may read team-a only.
    await cp.runKubectl(["create", "rolebinding", "ci-job-2-view", "-n", "team-a", "--clusterrole=view", "--user=gitlab:ci_job:2"]);
    const agent = (args: string[]) => cp.runKubectl(args, { kubeconfig: cp.agentKubeconfigPath, allowFailure: true });

    expect((await agent(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])).stdout).to.equal(AGENT_USERNAME);
    // The agent itself cannot read workloads...
    const own = await agent(["get", "pods", "-n", "team-a"]);
    expect(own.code).to.not.equal(0);
    expect(own.stderr).to.include("forbidden");
    // ...but may impersonate: as a ci_job user without a RoleBinding it is forbidden,
    const job1 = await agent(["get", "pods", "-n", "team-a", "--as=gitlab:ci_job:1", "--as-group=gitlab:ci_job"]);
    expect(job1.code).to.not.equal(0);
    expect(job1.stderr).to.include('User "gitlab:ci_job:1" cannot list resource "pods"');
    // with one in team-a it lists pods there and nowhere else.
    const job2a = await agent(["get", "pods", "-n", "team-a", "--as=gitlab:ci_job:2", "--as-group=gitlab:ci_job"]);
    expect(job2a.code, job2a.stderr).to.equal(0);
    const job2b = await agent(["get", "pods", "-n", "team-b", "--as=gitlab:ci_job:2", "--as-group=gitlab:ci_job"]);
    expect(job2b.code).to.not.equal(0);
    expect(job2b.stderr).to.include('User "gitlab:ci_job:2" cannot list resource "pods" in API group "" in the namespace "team-b"');
  });
});

describe("tools/control-plane with controllers: + kube-controller-manager + kube-scheduler", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  const volumeDirs: string[] = []; // provisioned hostPath volumes: gone after stop()

  before(async function () {
    findBinaries();
    const t0 = Date.now();
    cp = await startControlPlane({ controllers: true });
    console.log(`      control plane with controllers ready in ${Date.now() - t0} ms at ${cp.apiServerUrl}`);
  });
  after(async () => {
    if (!cp) return;
    await stopAndCheck(cp);
    expect(volumeDirs.filter((d) => existsSync(d)), "provisioned volume directories removed").to.deep.equal([]);
  });

  const get = async (args: string[]) => JSON.parse((await cp.runKubectl(["get", ...args, "-o", "json"])).stdout);
  const wait = (args: string[]) => cp.runKubectl(["wait", ...args, "--timeout=120s"], { timeoutMs: 130_000 });
  /** Polls `probe` until it holds (for states kubectl wait cannot express, such as a field gone). */
  const eventually = (what: string, probe: () => Promise<boolean>) => waitFor(probe, 120_000, what);
  /** Waits for the claim to bind; returns its volume's directory (made by the hostPath provisioner). */
  const boundVolumeDir = async (ns: string) => {
    await wait(["-n", ns, "--for=jsonpath={.status.phase}=Bound", "pvc/data"]);
    const pvc = await get(["-n", ns, "pvc/data"]);
    expect(pvc.spec.storageClassName).to.equal(STORAGE_CLASS);
    const pv = await get([`pv/${pvc.spec.volumeName}`]);
    const dir = pv.spec.hostPath.path as string;
    volumeDirs.push(dir);
    expect(existsSync(dir), `${dir} exists`).to.equal(true);
    return { pv: pv.metadata.name as string, dir };
  };

  it("rolls out a Deployment to a kwok pod, reports its conditions, scales it to 0 and collects its ReplicaSet", async () => {
    await cp.runKubectl(["create", "namespace", "apps"]);
    await cp.runKubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: webApp("apps") }) });

    await wait(["-n", "apps", "--for=jsonpath={.status.availableReplicas}=1", "deployment/web"]);
    await wait(["-n", "apps", "--for=jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}=NewReplicaSetAvailable", "deployment/web"]);
    const deployment = await get(["-n", "apps", "deployment/web"]);
    expect(deployment.status).to.include({ replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 });
    expect(condition(deployment, "Available")).to.include({ status: "True", reason: "MinimumReplicasAvailable" });
    expect(condition(deployment, "Progressing")).to.include({ status: "True", reason: "NewReplicaSetAvailable" });

    // The scheduler bound the pod (it names no node) to the kwok node; kwok made it Running and Ready.
    const pods = (await get(["-n", "apps", "pods", "-l", "app=web"])).items;
    expect(pods).to.have.length(1);
    expect(pods[0].spec.nodeName).to.equal(KWOK_NODE_NAME);
    expect(pods[0].status.phase).to.equal("Running");
    expect(pods[0].metadata.ownerReferences[0].kind).to.equal("ReplicaSet");
    // ServiceAccount admission is on: the pod runs as the namespace's "default" ServiceAccount.
    expect(pods[0].spec.serviceAccountName).to.equal("default");
    await boundVolumeDir("apps");
    // The Service's EndpointSlice lists the ready pod.
    await eventually("an endpoint for the pod", async () => {
      const slices = (await get(["-n", "apps", "endpointslices", "-l", "kubernetes.io/service-name=web"])).items;
      return slices.some((s: { endpoints?: Array<{ addresses: string[]; conditions: { ready?: boolean } }> }) =>
        s.endpoints?.some((e) => e.addresses.includes(pods[0].status.podIP) && e.conditions.ready === true));
    });

    await cp.runKubectl(["scale", "-n", "apps", "deployment/web", "--replicas=0"]);
    await eventually("scaled to 0", async () => {
      const d = await get(["-n", "apps", "deployment/web"]);
      return d.status.observedGeneration >= d.metadata.generation && !d.status.replicas && !d.status.availableReplicas;
    });
    await eventually("without pods", async () => (await get(["-n", "apps", "pods", "-l", "app=web"])).items.length === 0);
    expect(condition(await get(["-n", "apps", "deployment/web"]), "Available")).to.include({ status: "True" });

    // The garbage collector deletes the ReplicaSet that the Deployment owned.
    expect((await get(["-n", "apps", "replicasets", "-l", "app=web"])).items).to.have.length(1);
    await cp.runKubectl(["delete", "-n", "apps", "deployment/web"]);
    await eventually("without ReplicaSets", async () => (await get(["-n", "apps", "replicasets", "-l", "app=web"])).items.length === 0);
  });

  it("deletes a namespace with objects in it: its pods, claims and volumes go, then the namespace", async () => {
    await cp.runKubectl(["create", "namespace", "doomed"]);
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "List", items: [
        ...webApp("doomed"),
        { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "settings", namespace: "doomed" }, data: { a: "1" } },
        { apiVersion: "v1", kind: "Secret", metadata: { name: "token", namespace: "doomed" }, stringData: { t: "x" } },
      ] }),
    });
    await wait(["-n", "doomed", "--for=jsonpath={.status.availableReplicas}=1", "deployment/web"]);
    const volume = await boundVolumeDir("doomed");

    await cp.runKubectl(["delete", "namespace", "doomed", "--wait=false"]);
    await wait(["--for=delete", "namespace/doomed"]);
    expect((await cp.runKubectl(["get", "namespace", "doomed"], { allowFailure: true })).stderr).to.include("NotFound");
    // The claim went with the namespace; its volume (reclaim policy Delete) and directory follow.
    await wait(["--for=delete", `pv/${volume.pv}`]);
    await eventually("without the volume's directory", async () => !existsSync(volume.dir));
  });
});

/** A Deployment of one pod (no node named: the scheduler picks it) with a claim, and its Service. */
function webApp(namespace: string): object[] {
  const labels = { app: "web" };
  return [
    { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: "data", namespace },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } },
    { apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace }, spec: { selector: labels, ports: [{ port: 80, targetPort: 8080 }] } },
    { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "web", namespace, labels },
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            containers: [{ name: "web", image: "registry.example/web:1", ports: [{ containerPort: 8080 }], volumeMounts: [{ name: "data", mountPath: "/data" }] }],
            volumes: [{ name: "data", persistentVolumeClaim: { claimName: "data" } }],
          },
        },
      } },
  ];
}

function condition(object: { status: { conditions?: Array<{ type: string }> } }, type: string): object | undefined {
  return object.status.conditions?.find((c) => c.type === type);
}

/** stop() ends every child and removes the folder. */
async function stopAndCheck(cp: ControlPlane): Promise<void> {
  const pids = pgrep(cp.dir); // every child names the temporary folder in its arguments
  expect(pids, "children found before stop()").to.not.be.empty;
  await cp.stop();
  expect(existsSync(cp.dir), "temporary folder removed").to.equal(false);
  expect(pids.filter(alive), "no child process left running").to.deep.equal([]);
}

function pgrep(text: string): number[] {
  try {
    return execFileSync("pgrep", ["-f", text], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
