// Leader election against a real kube-apiserver with RBAC (tools/control-plane, `npm run
// control-plane`): the agent's ServiceAccount competes for the Lease as GitLab's agentk does.
import { expect } from "chai";
import { KubeConfig } from "@kubernetes/client-node";
import pino from "pino";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { HUNG_MS, waitFor } from "@kasbridge/testing/wait";
import { AGENT_NAMESPACE, findBinaries, startControlPlane, type ControlPlane } from "../../../tools/control-plane/control-plane.js";
import { create } from "@bufbuild/protobuf";
import { AgentConfigurationSchema } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { configuredAgentModule } from "./agent-configuration-source.js";
import type { AgentModuleContext } from "./agent-module.js";
import { createLeadership, type LeaderElectionOptions, type LeadershipController } from "./leadership.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
/** Short terms so that a test waiting for an expiry does not wait GitLab's 15 s. */
const timings = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 250 };

describe("agent leader election (Lease agent-<id>-lock, real API server)", function () {
  this.timeout(120_000);
  let cp: ControlPlane;
  let kubeConfig: KubeConfig;
  const cleanup = new Cleanup();
  let agentId = 100n;

  before(async () => {
    findBinaries();
    // The agent may do what GitLab's chart lets it: Leases in its own namespace.
    cp = await startControlPlane({
      kwok: false,
      agentRules: [{ apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] }],
    });
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(cp.agentKubeconfigPath);
  });
  after(async () => {
    await cleanup.run();
    await cp?.stop();
  });

  /** A candidate: one agent process's leadership with one piece of leader work that records its terms. */
  function candidate(name: string, id: bigint, options: Partial<LeaderElectionOptions> = {}) {
    const shutdown = new AbortController();
    const leadership: LeadershipController = createLeadership(
      { kubeConfig, ...timings, ...options },
      { podName: name, podNamespace: AGENT_NAMESPACE, podId: 1n, shutdownSignal: shutdown.signal },
      logger.child({ candidate: name }),
    );
    const terms: Array<{ ended: boolean }> = [];
    leadership.run("record", async (signal) => {
      const term = { ended: false };
      terms.push(term);
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      term.ended = true;
    });
    leadership.start();
    leadership.setAgentId(id);
    const stop = async () => {
      shutdown.abort();
      await leadership.close();
    };
    cleanup.add(stop);
    return { name, leadership, terms, stop, running: () => terms.some((t) => !t.ended) };
  }

  async function lease(name: string): Promise<{ holderIdentity?: string; leaseTransitions?: number; leaseDurationSeconds?: number } | undefined> {
    const r = await cp.runKubectl(["get", "lease", "-n", AGENT_NAMESPACE, name, "-o", "json"], { allowFailure: true });
    return r.code === 0 ? JSON.parse(r.stdout).spec : undefined;
  }

  it("elects one of two pods: only it runs the leader work, and the Lease names it", async () => {
    const id = agentId++;
    const a = candidate("agentk-a", id);
    const b = candidate("agentk-b", id);
    await waitFor(() => a.leadership.isLeader || b.leadership.isLeader, HUNG_MS, "a leader");
    const [leader, follower] = a.leadership.isLeader ? [a, b] : [b, a];
    await waitFor(() => leader.running(), HUNG_MS, "the leader's work");
    // The follower keeps trying while the leader renews; it never leads or runs the work.
    const before = (await lease(`agent-${id}-lock`))!;
    expect(before.holderIdentity).to.equal(leader.name);
    expect(before.leaseDurationSeconds).to.equal(3);
    await waitFor(async () => (await lease(`agent-${id}-lock`))!.holderIdentity === leader.name, HUNG_MS);
    expect(follower.leadership.isLeader).to.equal(false);
    expect(follower.terms).to.have.length(0);
    expect(leader.terms).to.have.length(1);
  });

  it("hands over at once when the leader stops: the Lease is given up, the other pod leads", async () => {
    const id = agentId++;
    const a = candidate("agentk-a", id);
    await waitFor(() => a.running(), HUNG_MS, "a leads");
    const b = candidate("agentk-b", id);
    await a.stop();
    // The leader's work ended before it gave the Lease up.
    expect(a.terms.every((t) => t.ended)).to.equal(true);
    await waitFor(() => b.running(), HUNG_MS, "b leads");
    const spec = (await lease(`agent-${id}-lock`))!;
    expect(spec.holderIdentity).to.equal("agentk-b");
    expect(spec.leaseTransitions).to.equal(1);
  });

  it("steps down when another holder takes the Lease, and leads again once it expires", async () => {
    const id = agentId++;
    const a = candidate("agentk-a", id);
    await waitFor(() => a.running(), HUNG_MS, "a leads");
    // Another holder (e.g. a pod whose renewals we could not see) writes itself into the Lease.
    const name = `agent-${id}-lock`;
    await cp.runKubectl(["patch", "lease", "-n", AGENT_NAMESPACE, name, "--type=merge", "-p", JSON.stringify({ spec: { holderIdentity: "intruder", leaseDurationSeconds: 2 } })]);
    await waitFor(() => !a.leadership.isLeader, HUNG_MS, "a steps down");
    expect(a.terms[0]!.ended).to.equal(true);
    // Nobody renews the intruder's record: once it expired, a takes the Lease back for a second term.
    await waitFor(() => a.terms.length === 2 && a.running(), HUNG_MS, "a's second term");
    expect((await lease(name))!.holderIdentity).to.equal("agentk-a");
  });

  it("does not campaign before the agent knows its id, nor without leader work", async () => {
    const shutdown = new AbortController();
    const agent = { podNamespace: AGENT_NAMESPACE, podId: 1n, shutdownSignal: shutdown.signal };
    // An id but no leader work: no Lease.
    const idle = createLeadership({ kubeConfig, ...timings }, { ...agent, podName: "idle" }, logger);
    idle.start();
    const idleId = agentId++;
    idle.setAgentId(idleId);
    // Leader work but no id yet: no campaign.
    const noId = createLeadership({ kubeConfig, ...timings }, { ...agent, podName: "no-id" }, logger);
    let ran = false;
    noId.run("work", async () => {
      ran = true;
    });
    noId.start();
    // A candidate with both, started after them, gets to lead: by then the others had their chance.
    const both = candidate("both", agentId++);
    await waitFor(() => both.running(), HUNG_MS, "the candidate with an id and work leads");
    expect(await lease(`agent-${idleId}-lock`)).to.equal(undefined);
    expect(ran).to.equal(false);
    expect(noId.isLeader).to.equal(false);
    shutdown.abort();
    await Promise.all([idle.close(), noId.close()]);
  });

  it("runs a leaderOnly configured module on the leader only, with the latest configuration, and moves it on a stop", async () => {
    const id = agentId++;
    /** One agent process with a leaderOnly module whose loop records what it ran with. */
    const pod = (name: string) => {
      const shutdown = new AbortController();
      const leadership = createLeadership({ kubeConfig, ...timings }, { podName: name, podNamespace: AGENT_NAMESPACE, podId: 1n, shutdownSignal: shutdown.signal }, logger);
      const runs: Array<{ commits: string[]; ended: boolean }> = [];
      const module = configuredAgentModule(
        "test",
        [],
        async (ctx, configuration) => {
          const run = { commits: [] as string[], ended: false };
          runs.push(run);
          configuration.watch(({ commitId }) => run.commits.push(commitId), ctx.shutdownSignal);
          await new Promise((resolve) => ctx.shutdownSignal.addEventListener("abort", resolve, { once: true }));
          run.ended = true;
        },
        { leaderOnly: true },
      );
      module.start!({ leadership, shutdownSignal: shutdown.signal, logger } as unknown as AgentModuleContext);
      leadership.start();
      const apply = (commit: string) => {
        module.applyConfiguration!(create(AgentConfigurationSchema, { agentId: id }), commit);
        leadership.setAgentId(id);
      };
      const stop = async () => {
        shutdown.abort();
        await leadership.close();
        await module.close?.();
      };
      cleanup.add(stop);
      return { leadership, runs, apply, stop };
    };
    const a = pod("agentk-a");
    a.apply("c1");
    await waitFor(() => a.runs.length === 1, HUNG_MS, "a's module runs");
    const b = pod("agentk-b");
    b.apply("c1");
    a.apply("c2");
    b.apply("c2");
    await waitFor(() => a.runs[0]!.commits.includes("c2"), HUNG_MS, "a's module sees c2");
    expect(b.runs).to.have.length(0);
    await a.stop();
    expect(a.runs[0]!.ended).to.equal(true);
    // b takes over and its loop starts with the configuration it holds.
    await waitFor(() => b.runs.length === 1, HUNG_MS, "b's module runs");
    expect(b.runs[0]!.commits).to.deep.equal(["c2"]);
  });

  it("without an election this process leads from start to stop", async () => {
    const shutdown = new AbortController();
    const sole = createLeadership(undefined, { podName: "", podNamespace: "", podId: 1n, shutdownSignal: shutdown.signal }, logger);
    const changes: boolean[] = [];
    sole.onChange((leader) => changes.push(leader));
    let aborted = false;
    sole.run(
      "work",
      (signal) =>
        new Promise((resolve) =>
          signal.addEventListener("abort", () => {
            aborted = true;
            resolve();
          }),
        ),
    );
    sole.start();
    expect(sole.isLeader).to.equal(true);
    shutdown.abort();
    await sole.close();
    expect(aborted).to.equal(true);
    expect(changes).to.deep.equal([true, false]);
  });

  it("refuses timings that cannot work (the lease must outlast the renew deadline)", () => {
    const shutdown = new AbortController();
    expect(() =>
      createLeadership({ kubeConfig, leaseDurationMs: 1_000, renewDeadlineMs: 2_000 }, { podName: "x", podNamespace: "y", podId: 1n, shutdownSignal: shutdown.signal }, logger),
    ).to.throw(/leaseDurationMs must be greater than renewDeadlineMs/);
  });
});
