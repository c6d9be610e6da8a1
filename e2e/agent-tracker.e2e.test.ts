// GitLab Rails asks KAS which agentk processes are connected: AgentTracker/GetConnectedAgents on
// the internal API (8153, the platform's JWT), by agent or by configuration project. Real kas and
// agentk processes; with two replicas on Redis and PostgreSQL, each replica answers for both.
import { expect } from "chai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AgentTracker } from "@kasbridge/sdk/gen/gitlab/agent/agent_tracker/rpc/rpc_pb";
import { internalApiClientInterceptor } from "@kasbridge/sdk/kas";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { rejection, waitFor } from "@kasbridge/testing/wait";
import { api, createAgentWithToken, startAgentk, startKas, type KasProcess } from "./harness.test-support.js";
import { ReplicaSet } from "./replicas.test-support.js";

describe("e2e: AgentTracker/GetConnectedAgents on the internal API", function () {
  this.timeout(180_000);
  const cleanups = new Cleanup();
  after(() => cleanups.run());

  function tracker(kas: KasProcess, secret = kas.secret) {
    const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
    const sessions = new Http2SessionManager(baseUrl);
    cleanups.add(() => sessions.abort());
    return createClient(AgentTracker, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [internalApiClientInterceptor(secret, 0)] }));
  }
  const byAgent = async (kas: KasProcess, agentId: number) =>
    (await tracker(kas).getConnectedAgents({ request: { case: "agentId", value: BigInt(agentId) } })).agents;
  const byProject = async (kas: KasProcess, projectId: number) =>
    (await tracker(kas).getConnectedAgents({ request: { case: "projectId", value: BigInt(projectId) } })).agents;

  it("lists each connected agentk process by agent and by project, with GitLab's fields; refuses bad requests and strangers", async () => {
    const kas = await startKas();
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas, "first");
    // A second agent in the same configuration project.
    const second = await api(kas, "POST", `/projects/${a.projectId}/cluster_agents`, { name: "second" });
    const secondToken = (await api(kas, "POST", `/projects/${a.projectId}/cluster_agents/${second.json.id}/tokens`, { name: "t" })).json.token as string;
    for (const [token, pod] of [[a.token, "pod-a1"], [a.token, "pod-a2"], [secondToken, "pod-b1"]] as const) {
      const agentk = startAgentk(kas.addresses.agent, token, { POD_NAME: pod });
      cleanups.add(() => agentk.cleanup());
    }
    await waitFor(async () => (await byProject(kas, a.projectId)).length === 3, 30_000, "three agentk processes listed");

    const first = await byAgent(kas, a.agentId);
    expect(first.map((i) => i.agentMeta?.podName).sort()).to.deep.equal(["pod-a1", "pod-a2"]);
    for (const info of first) {
      expect(info.agentId).to.equal(BigInt(a.agentId));
      expect(info.projectId).to.equal(BigInt(a.projectId));
      expect(info.connectionId > 0n).to.equal(true);
      expect(info.agentMeta?.version).to.match(/^v\d+\.\d+\.\d+/);
      expect(info.agentMeta?.podNamespace).to.equal("gitlab-agent");
      expect(Number(info.connectedAt?.seconds)).to.be.closeTo(Date.now() / 1000, 120);
    }
    // The same connections as the platform's REST view.
    const rest = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/connections`)).json as Array<{ connection_id: string }>;
    expect(first.map((i) => i.connectionId.toString()).sort()).to.deep.equal(rest.map((c) => String(c.connection_id)).sort());
    expect((await byProject(kas, a.projectId)).map((i) => i.agentMeta?.podName).sort()).to.deep.equal(["pod-a1", "pod-a2", "pod-b1"]);
    expect(await byAgent(kas, 999_999)).to.deep.equal([]);

    // GitLab's validation, and only the platform's JWT.
    const empty = await rejection(tracker(kas).getConnectedAgents({}));
    expect(ConnectError.from(empty).code).to.equal(Code.InvalidArgument);
    expect(ConnectError.from(empty).rawMessage).to.equal("invalid GetConnectedAgentsRequest.Request: value is required");
    const zero = await rejection(byAgent(kas, 0));
    expect(ConnectError.from(zero).code).to.equal(Code.InvalidArgument);
    const stranger = await rejection(tracker(kas, new Uint8Array(32).fill(9)).getConnectedAgents({ request: { case: "agentId", value: 1n } }));
    expect(ConnectError.from(stranger).code).to.equal(Code.Unauthenticated);
  });

  it("answers the same on every replica: connections come from Redis", async () => {
    const set = new ReplicaSet();
    cleanups.add(() => set.close());
    await set.open();
    const [one, two] = [await set.start(), await set.start()];
    const a = await createAgentWithToken(one);
    const agentk = startAgentk(one.addresses.agent, a.token, { POD_NAME: "pod-on-one" });
    cleanups.add(() => agentk.cleanup());
    await waitFor(async () => (await byAgent(two, a.agentId)).length === 1, 30_000, "the other replica lists the agent");
    expect((await byProject(two, a.projectId))[0]!.agentMeta?.podName).to.equal("pod-on-one");
    // Gone from both once agentk stops.
    await agentk.cleanup();
    await waitFor(async () => (await byAgent(two, a.agentId)).length === 0 && (await byAgent(one, a.agentId)).length === 0, 30_000, "the connection removed");
  });
});
