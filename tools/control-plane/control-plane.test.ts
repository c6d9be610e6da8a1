// The test-time control plane is real: etcd + kube-apiserver with RBAC, kwok running pods, the
// real kubectl. Needs the binaries from `npm run control-plane`; without them this test fails
// (it does not skip) and says so.
import { expect } from "chai";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { AGENT_USERNAME, KWOK_NODE_NAME, findBinaries, startControlPlane, type ControlPlane } from "./control-plane.js";

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
    if (!cp) return;
    const pids = pgrep(cp.dir); // every child names the temporary folder in its arguments
    expect(pids, "children found before stop()").to.not.be.empty;
    await cp.stop();
    expect(existsSync(cp.dir), "temporary folder removed").to.equal(false);
    expect(pids.filter(alive), "no child process left running").to.deep.equal([]);
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
