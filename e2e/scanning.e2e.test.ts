// Operational container scanning end to end: real `kas` (with the embedded platform) and `agentk`
// processes, a real kube-apiserver with the controllers and kwok (tools/control-plane), the agent's
// configuration pushed over git. kwok runs no container, so the test stands in for the scanner's
// container only: when the agent's scanner pod runs, the test writes a Trivy JSON report as that
// pod's log (a log file of its own, served by kwok) and marks the pod Succeeded, as the kubelet
// would (sdk/…/scanner-stand-in.test-support.ts). Everything after that is the product: the agent
// reads the log, deletes the pod, reports through KAS; the platform keeps, resolves and lists.
import { rmSync } from "node:fs";
import { expect } from "chai";
import { AGENT_NAMESPACE, findBinaries, startControlPlane, type ControlPlane } from "../tools/control-plane/control-plane.js";
import {
  podGone,
  SCANNING_AGENT_RULES,
  standInForScanner,
  trivyReport,
  type ScannerOutcome,
  type TrivyWorkloadInput,
} from "../sdk/src/modules/starboard_vulnerability/agent/scanner-stand-in.test-support.js";
import { GitClient } from "./git.test-support.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { adminToken, api, createAgentWithToken, startAgentk, startKas, type Proc } from "./harness.test-support.js";

const NAMESPACES = ["team-a", "team-b"];

describe("e2e: operational container scanning (agentk scanner pods -> kas -> platform)", function () {
  this.timeout(300_000);
  let cp: ControlPlane;
  let kas: Awaited<ReturnType<typeof startKas>>;
  let agent: Awaited<ReturnType<typeof createAgentWithToken>>;
  let agentkA: Proc & { cleanup(): Promise<void> };
  let wc: string;
  let webReplicaSet: string;
  let webPod: string;
  const git = new GitClient();
  const cleanups = new Cleanup();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));

  before(async () => {
    findBinaries();
    cp = await startControlPlane({
      controllers: true,
      ownLogPods: NAMESPACES.map((ns) => ({ namespace: AGENT_NAMESPACE, name: `trivy-scan-${ns}` })),
      agentRules: SCANNING_AGENT_RULES,
    });
    cleanups.add(() => cp.stop());
    for (const ns of NAMESPACES) await cp.runKubectl(["create", "namespace", ns]);
    await cp.runKubectl(["create", "deployment", "web", "-n", "team-a", "--image=registry.example/web:1"]);
    await cp.runKubectl(["run", "tool", "-n", "team-b", "--image=registry.example/tool:1"]);
    await waitFor(async () => (await cp.runKubectl(["get", "pods", "-n", "team-a", "-l", "app=web", "-o", "name"])).stdout.trim() !== "", 60_000, "web's pod");
    webPod = (await cp.runKubectl(["get", "pods", "-n", "team-a", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"])).stdout;
    webReplicaSet = (await cp.runKubectl(["get", "rs", "-n", "team-a", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"])).stdout;

    kas = await startKas();
    cleanups.add(() => kas.cleanup());
    agent = await createAgentWithToken(kas, "prod");
    const project = (await api(kas, "GET", `/projects/${agent.projectId}`)).json;
    wc = await git.clone(`http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${project.path_with_namespace}.git`);
    // The cadence every minute: the first scan comes on it.
    await pushConfig("* * * * *");
    agentkA = startPod("agentk-a");
  });
  after(() => cleanups.run());

  async function pushConfig(cadence: string): Promise<void> {
    const commit = await git.commit(wc, {
      ".gitlab/agents/prod/config.yaml": `container_scanning:\n  cadence: '${cadence}'\n  vulnerability_report:\n    namespaces: [${NAMESPACES.join(", ")}]\n  resource_requirements:\n    limits:\n      memory: 1Gi\n`,
    });
    await git.push(wc);
    await waitFor(async () => (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json.config_commit_id === commit, undefined, "config accepted");
  }

  /** An agentk pod of the agent, with cluster access (its ServiceAccount's kubeconfig). */
  function startPod(podName: string) {
    const proc = startAgentk(kas.addresses.agent, agent.token, { POD_NAME: podName, POD_NAMESPACE: AGENT_NAMESPACE, KUBECONFIG: cp.agentKubeconfigPath }, [
      "--container-scanning-poll-interval-ms",
      "200",
    ]);
    cleanups.add(() => proc.cleanup());
    return proc;
  }

  const leaseHolder = async () =>
    (await cp.runKubectl(["get", "lease", "-n", AGENT_NAMESPACE, `agent-${agent.agentId}-lock`, "-o", "jsonpath={.spec.holderIdentity}"], { allowFailure: true })).stdout;

  /** The scanner's findings: web's ReplicaSet (and the pod it controls, which agentk leaves out) in team-a; the tool pod in team-b. */
  function teamA(without: string[] = []): TrivyWorkloadInput[] {
    const keep = (vs: TrivyWorkloadInput["vulnerabilities"]) => vs.filter((v) => !without.includes(v.VulnerabilityID));
    return [
      {
        namespace: "team-a",
        kind: "ReplicaSet",
        name: webReplicaSet,
        osTarget: "registry.example/web:1 (debian 10.3)",
        vulnerabilities: keep([
          { VulnerabilityID: "CVE-2020-27350", PkgName: "apt", InstalledVersion: "1.8.2", FixedVersion: "1.8.2.2", Severity: "MEDIUM" },
          { VulnerabilityID: "CVE-2021-3711", PkgName: "openssl", InstalledVersion: "1.1.1d", FixedVersion: "1.1.1l", Severity: "CRITICAL" },
        ]),
        langVulnerabilities: keep([{ VulnerabilityID: "CVE-2022-41723", PkgName: "golang.org/x/net", InstalledVersion: "0.4.0", FixedVersion: "0.7.0", Severity: "HIGH" }]),
      },
      {
        namespace: "team-a",
        kind: "Pod",
        name: webPod,
        osTarget: "registry.example/web:1 (debian 10.3)",
        vulnerabilities: keep([{ VulnerabilityID: "CVE-2020-27350", PkgName: "apt", InstalledVersion: "1.8.2", FixedVersion: "1.8.2.2", Severity: "MEDIUM" }]),
      },
    ];
  }
  function teamB(without: string[] = []): TrivyWorkloadInput[] {
    return [
      {
        namespace: "team-b",
        kind: "Pod",
        name: "tool",
        osTarget: "registry.example/tool:1 (alpine 3.12.0)",
        vulnerabilities: [
          { VulnerabilityID: "CVE-2021-36159", PkgName: "apk-tools", InstalledVersion: "2.10.5-r1", FixedVersion: "2.10.7-r0", Severity: "LOW" },
          { VulnerabilityID: "CVE-2021-30139", PkgName: "apk-tools", InstalledVersion: "2.10.5-r1", FixedVersion: "2.10.6-r0", Severity: "HIGH" },
        ].filter((v) => !without.includes(v.VulnerabilityID)),
      },
    ];
  }

  /** Plays both scanner containers of one scan; resolves the pods once the agent deleted them. */
  async function scan(outcomes: Record<string, ScannerOutcome>) {
    const pods = await Promise.all(NAMESPACES.map((ns) => standInForScanner(cp, AGENT_NAMESPACE, `trivy-scan-${ns}`, outcomes[ns]!)));
    for (const ns of NAMESPACES) await podGone(cp, AGENT_NAMESPACE, `trivy-scan-${ns}`);
    return pods;
  }

  async function requestScan(): Promise<number> {
    const r = await api(kas, "POST", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}/vulnerability_scans`, {});
    expect(r.status, JSON.stringify(r.json)).to.equal(201);
    return r.json.id as number;
  }

  async function vulnerabilities(): Promise<Array<{ title: string; state: string; severity: string; finding: { uuid: string; location: { kubernetes_resource: { namespace: string; kind: string } } } }>> {
    const r = await api(kas, "GET", `/projects/${agent.projectId}/vulnerabilities?per_page=100`);
    expect(r.status).to.equal(200);
    return r.json;
  }
  const byTitle = async () => new Map((await vulnerabilities()).map((v) => [v.title, v]));

  /** Waits until the agent's scan ended (its metric-free sign: the log line of its scan result or of nothing resolved). */
  const scanResults = (proc: Proc) => proc.count(/scan result sent|not resolving anything|namespace scan failed/);

  it("creates GitLab's scanner pods on the cadence and lists each vulnerability once", async () => {
    const [podA] = await scan({ "team-a": { report: trivyReport(teamA()) }, "team-b": { report: trivyReport(teamB()) } });
    // The next cadence ticks are a year away from now on: the tests below ask for scans.
    await pushConfig("0 0 1 1 *");
    await agentkA.waitFor(/"cadence":"0 0 1 1 \*"/, "the new cadence applied");

    expect(podA!.metadata?.namespace).to.equal(AGENT_NAMESPACE);
    expect(podA!.spec?.serviceAccountName).to.equal("gitlab-agent");
    expect(podA!.spec?.restartPolicy).to.equal("Never");
    const container = podA!.spec!.containers[0]!;
    expect(container.image).to.match(/^aquasec\/trivy@sha256:/);
    expect(container.command).to.include.members(["trivy", "k8s", "-n", "team-a", "--format", "json"]);
    expect(container.resources).to.deep.equal({ limits: { cpu: "500m", memory: "1Gi" }, requests: { cpu: "100m", memory: "100Mi" } });

    await waitFor(async () => (await vulnerabilities()).length === 5, 30_000, "five vulnerabilities listed");
    const listed = await vulnerabilities();
    expect(listed.map((v) => v.title).sort()).to.deep.equal(["CVE-2020-27350", "CVE-2021-30139", "CVE-2021-36159", "CVE-2021-3711", "CVE-2022-41723"]);
    expect(listed.every((v) => v.state === "detected")).to.equal(true);
    // Most severe first; the controlled pod's duplicate is not there.
    expect(listed[0]!.severity).to.equal("critical");
    expect(listed.find((v) => v.title === "CVE-2020-27350")!.finding.location.kubernetes_resource.kind).to.equal("ReplicaSet");

    // The same findings again, on request: still one each.
    const done = scanResults(agentkA);
    await requestScan();
    await scan({ "team-a": { report: trivyReport(teamA()) }, "team-b": { report: trivyReport(teamB()) } });
    await waitFor(() => scanResults(agentkA) > done, 30_000, "the second scan's result");
    expect((await vulnerabilities()).length).to.equal(5);
  });

  it("resolves a CVE a later scan no longer finds and keeps the rest", async () => {
    const done = scanResults(agentkA);
    await requestScan();
    await scan({ "team-a": { report: trivyReport(teamA(["CVE-2021-3711"])) }, "team-b": { report: trivyReport(teamB()) } });
    await waitFor(async () => (await byTitle()).get("CVE-2021-3711")?.state === "resolved", 30_000, "CVE-2021-3711 resolved");
    expect(scanResults(agentkA)).to.be.greaterThan(done);
    const states = await byTitle();
    for (const title of ["CVE-2020-27350", "CVE-2022-41723", "CVE-2021-36159", "CVE-2021-30139"]) expect(states.get(title)!.state, title).to.equal("detected");
  });

  it("resolves nothing in a namespace whose report failed", async () => {
    const done = scanResults(agentkA);
    await requestScan();
    // team-a's scanner fails (its output, had it been read, would lack every CVE); team-b drops one CVE.
    await scan({ "team-a": { fail: "OOMKilled", log: trivyReport([]) }, "team-b": { report: trivyReport(teamB(["CVE-2021-30139"])) } });
    await waitFor(async () => (await byTitle()).get("CVE-2021-30139")?.state === "resolved", 30_000, "team-b's CVE resolved");
    expect(scanResults(agentkA)).to.be.greaterThan(done);
    const states = await byTitle();
    for (const title of ["CVE-2020-27350", "CVE-2022-41723"]) expect(states.get(title)!.state, title).to.equal("detected");
    expect(states.get("CVE-2021-36159")!.state).to.equal("detected");
    expect(agentkA.output).to.match(/scanner pod gitlab-agent\/trivy-scan-team-a failed: Error, OOMKilled/);
  });

  it("scans on one agent pod only: the Lease's holder; the other takes over when it stops", async () => {
    expect(await leaseHolder()).to.equal("agentk-a");
    const agentkB = startPod("agentk-b");
    await agentkB.waitFor(/"leader":"agentk-a"[^\n]*another pod leads|another pod leads[^\n]*"leader":"agentk-a"/, "agentk-b sees agentk-a lead");
    let startedA = agentkA.count(/vulnerability scan starting/);
    await requestScan();
    await scan({ "team-a": { report: trivyReport(teamA(["CVE-2021-3711"])) }, "team-b": { report: trivyReport(teamB(["CVE-2021-30139"])) } });
    await waitFor(() => agentkA.count(/vulnerability scan starting/) > startedA, 30_000, "agentk-a scanned");
    expect(agentkB.count(/vulnerability scan starting/)).to.equal(0);

    // agentk-a stops: it gives the Lease up, agentk-b leads and scans.
    startedA = agentkA.count(/vulnerability scan starting/);
    await agentkA.stop();
    await waitFor(async () => (await leaseHolder()) === "agentk-b", 30_000, "agentk-b holds the Lease");
    await requestScan();
    await scan({ "team-a": { report: trivyReport(teamA()) }, "team-b": { report: trivyReport(teamB(["CVE-2021-30139"])) } });
    await agentkB.waitFor(/vulnerability scan starting/, "agentk-b scanned", 30_000);
    // CVE-2021-3711 came back: a finding a scan resolved is detected again.
    await waitFor(async () => (await byTitle()).get("CVE-2021-3711")?.state === "detected", 30_000, "CVE-2021-3711 detected again");
    expect(agentkA.count(/vulnerability scan starting/)).to.equal(startedA);
  });
});
