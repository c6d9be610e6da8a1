// The platform's half of operational container scanning over real HTTP: agents' requests arrive on
// the internal API as KAS sends them (HTTP PlatformClient: agent token + KAS JWT), users use the
// REST API; both stores.
import { expect } from "chai";
import { Registry } from "prom-client";
import { createHttpPlatformClient, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { call, startTestPlatform, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { findingUuid, identifierFingerprint, locationFingerprint, uuidV5 } from "./finding-identity.js";

/** An agent's PUT body, as GitLab's agentk (and ours) builds it. */
function report(agentId: number, options: { cve?: string; pkg?: string; namespace?: string; kind?: string; name?: string; severity?: string } = {}) {
  const cve = options.cve ?? "CVE-2021-3711";
  const pkg = options.pkg ?? "openssl";
  return {
    vulnerability: {
      name: cve,
      message: `${cve} in ${pkg}`,
      description: "A flaw.",
      solution: `Upgrade ${pkg} from 1 to 2`,
      severity: options.severity ?? "Critical",
      confidence: "Unknown",
      identifiers: [{ type: "cve", name: cve, value: cve, url: `https://cve.mitre.org/cgi-bin/cvename.cgi?name=${cve}` }],
      links: [{ url: "https://avd.aquasec.com/nvd/x" }],
      location: {
        dependency: { package: { name: pkg }, version: "1" },
        kubernetes_resource: { namespace: options.namespace ?? "team-a", name: options.name ?? "web-7d9", kind: options.kind ?? "ReplicaSet", container_name: "", agent_id: String(agentId) },
        image: "registry.example/web:1",
        operating_system: "debian 10.3",
      },
    },
    scanner: { id: "starboard_trivy", name: "Trivy (via Starboard Operator)", vendor: { name: "GitLab" }, version: "@sha256:f7fe" },
  };
}

describeEachStore("platform: operational container scanning (starboard_vulnerability)", (getStore) => {
  const cleanup = new Cleanup();
  let platform: TestPlatform;
  let client: PlatformClient;
  let metrics: Registry;
  let projectId: number;
  let agents: Array<{ id: number; token: string }>;
  const admin = () => ({ token: platform.adminToken });

  beforeEach(async () => {
    metrics = new Registry();
    platform = await startTestPlatform(getStore(), { metrics });
    cleanup.add(() => platform.close());
    client = createHttpPlatformClient({ baseUrl: platform.baseUrl, jwtSecret: platform.jwtSecret });
    projectId = (await call(platform.baseUrl, "POST", "/api/v4/projects", { ...admin(), body: { name: "cluster" } })).body.id;
    agents = [];
    for (const name of ["prod", "staging"]) {
      const id = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { ...admin(), body: { name } })).body.id as number;
      const token = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents/${id}/tokens`, { ...admin(), body: { name: "t" } })).body.token as string;
      agents.push({ id, token });
    }
  });
  afterEach(() => cleanup.run());

  /** An agent's request through the internal API, as KAS forwards it. */
  async function agentRequest(agent: { token: string }, method: string, path: string, body?: unknown) {
    const res = await client.makeModuleRequest!({
      agentToken: agent.token,
      module: "starboard_vulnerability",
      method,
      urlPath: path,
      query: {},
      headers: body === undefined ? {} : { "content-type": ["application/json"] },
      body: (async function* () {
        if (body !== undefined) yield Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
      })(),
    });
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  // Tests inspect arbitrary JSON.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const list = async (query = "") => (await call(platform.baseUrl, "GET", `/api/v4/projects/${projectId}/vulnerabilities${query}`, admin())).body as Array<Record<string, any>>;

  it("keeps one vulnerability per finding: GitLab's UUID, the same on a rescan", async () => {
    // Ruby's Digest::UUID.uuid_v5 (RFC 4122): Python's uuid5(NAMESPACE_DNS, "python.org").
    expect(uuidV5("python.org", "6ba7b810-9dad-11d1-80b4-00c04fd430c8")).to.equal("886313e1-3b8a-5372-9b90-0c9aee199e5d");
    const [prod] = agents;
    const first = await agentRequest(prod!, "PUT", "/", report(prod!.id));
    expect(first.status).to.equal(200);
    const expected = findingUuid(
      identifierFingerprint("cve", "CVE-2021-3711"),
      locationFingerprint(prod!.id, { namespace: "team-a", kind: "ReplicaSet", name: "web-7d9" }, "openssl"),
      projectId,
    );
    expect(first.body).to.deep.equal({ uuid: expected });
    expect((await agentRequest(prod!, "PUT", "/", report(prod!.id))).body).to.deep.equal({ uuid: expected });
    // Another package, resource or agent is another finding.
    const other = await agentRequest(prod!, "PUT", "/", report(prod!.id, { pkg: "libssl1.1" }));
    expect(other.body.uuid).to.not.equal(expected);
    const vulnerabilities = await list();
    expect(vulnerabilities).to.have.length(2);
    const v = vulnerabilities.find((x) => x.finding.uuid === expected)!;
    expect(v).to.deep.include({ title: "CVE-2021-3711", state: "detected", severity: "critical", confidence: "unknown", report_type: "cluster_image_scanning", cluster_agent_id: String(prod!.id) });
    expect(v.project).to.include({ id: projectId, path_with_namespace: "root/cluster" });
    expect(v.finding.identifiers).to.deep.equal([
      { external_type: "cve", external_id: "CVE-2021-3711", name: "CVE-2021-3711", url: "https://cve.mitre.org/cgi-bin/cvename.cgi?name=CVE-2021-3711", fingerprint: identifierFingerprint("cve", "CVE-2021-3711") },
    ]);
    expect(v.finding.location.kubernetes_resource).to.deep.equal({ namespace: "team-a", name: "web-7d9", kind: "ReplicaSet", container_name: "", agent_id: String(prod!.id) });
    expect(v.finding.scanner).to.deep.equal({ external_id: "starboard_trivy", name: "Trivy (via Starboard Operator)", vendor: "GitLab", version: "@sha256:f7fe" });
    expect(v.finding.metadata_version).to.equal("cluster_image_scanning:1.0");
    const single = await call(platform.baseUrl, "GET", `/api/v4/vulnerabilities/${v.id}`, admin());
    expect(single.body).to.deep.equal(v);
    expect(await metrics.metrics()).to.match(/platform_vulnerability_reports_total\{result="created"\} 2/).and.match(/platform_vulnerability_reports_total\{result="existing"\} 1/);
  });

  it("refuses a malformed report naming every problem as GitLab does, and a report for another agent", async () => {
    const [prod] = agents;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const bad = report(prod!.id) as Record<string, any>;
    delete bad.vulnerability.name;
    delete bad.vulnerability.location.image;
    bad.vulnerability.identifiers = [{ name: "CVE-1" }];
    bad.scanner.vendor = 7;
    const res = await agentRequest(prod!, "PUT", "/", bad);
    expect(res.status).to.equal(400);
    for (const problem of ["vulnerability[name] is missing", "vulnerability[location][image] is missing", "vulnerability[identifiers][0][type] is missing", "scanner[vendor] is invalid"]) {
      expect(res.body.error).to.include(problem);
    }
    expect((await agentRequest(prod!, "PUT", "/", report(prod!.id, { severity: "Dire" }))).body.error).to.match(/vulnerability\[severity\] does not have a valid value/);
    expect((await agentRequest(prod!, "PUT", "/", "{not json")).status).to.equal(400);
    const foreign = await agentRequest(prod!, "PUT", "/", report(agents[1]!.id));
    expect(foreign.status).to.equal(400);
    expect(foreign.body.message).to.match(/\[agent_id\] must be this agent's id/);
    expect(await list()).to.have.length(0);
  });

  it("acts as the agent's creator, who must be allowed to manage vulnerabilities", async () => {
    const user = (await call(platform.baseUrl, "POST", "/api/v4/users", { ...admin(), body: { username: "dev", name: "Dev", email: "dev@example.com" } })).body;
    const pat = (await call(platform.baseUrl, "POST", `/api/v4/users/${user.id}/personal_access_tokens`, { ...admin(), body: { name: "t", scopes: ["api"] } })).body.token;
    await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/members`, { ...admin(), body: { user_id: user.id, access_level: 40 } });
    const agentId = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents`, { token: pat, body: { name: "devs" } })).body.id as number;
    const token = (await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/cluster_agents/${agentId}/tokens`, { token: pat, body: { name: "t" } })).body.token as string;
    expect((await agentRequest({ token }, "PUT", "/", report(agentId))).status).to.equal(200);
    // The creator is blocked: the agent may no longer report, nor resolve.
    await call(platform.baseUrl, "POST", `/api/v4/users/${user.id}/block`, admin());
    expect((await agentRequest({ token }, "PUT", "/", report(agentId, { cve: "CVE-2020-1" }))).status).to.equal(403);
    expect((await agentRequest({ token }, "POST", "/scan_result", { uuids: [] })).status).to.equal(403);
    expect(await list()).to.have.length(1);
  });

  it("resolves what a scan no longer saw: active findings of that agent only, in the scanned namespaces when named", async () => {
    const [prod, staging] = agents;
    const put = async (agent: { id: number; token: string }, options: Parameters<typeof report>[1]) => (await agentRequest(agent, "PUT", "/", report(agent.id, options))).body.uuid as string;
    const keep = await put(prod!, { cve: "CVE-1" });
    const gone = await put(prod!, { cve: "CVE-2" });
    const confirmedGone = await put(prod!, { cve: "CVE-3" });
    const dismissedGone = await put(prod!, { cve: "CVE-4" });
    const otherNamespace = await put(prod!, { cve: "CVE-5", namespace: "team-b" });
    const otherAgent = await put(staging!, { cve: "CVE-6" });
    const byUuid = async () => new Map((await list()).map((v) => [v.finding.uuid as string, v]));
    const id = async (uuid: string) => (await byUuid()).get(uuid)!.id as number;
    expect((await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${await id(confirmedGone)}/confirm`, admin())).status).to.equal(201);
    expect((await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${await id(dismissedGone)}/dismiss`, admin())).status).to.equal(201);

    // kasbridge's extension: the scan covered team-a only.
    const partial = await agentRequest(prod!, "POST", "/scan_result", { uuids: [keep], namespaces: ["team-a"] });
    expect(partial).to.deep.equal({ status: 200, body: { resolved: 2 } });
    let states = await byUuid();
    expect(states.get(keep)!.state).to.equal("detected");
    expect(states.get(gone)).to.deep.include({ state: "resolved", resolved_on_default_branch: true, resolved_by_id: null });
    expect(states.get(confirmedGone)!.state).to.equal("resolved");
    expect(states.get(dismissedGone)!.state).to.equal("dismissed");
    expect(states.get(otherNamespace)!.state).to.equal("detected");
    expect(states.get(otherAgent)!.state).to.equal("detected");

    // GitLab's: every namespace of the agent.
    expect((await agentRequest(prod!, "POST", "/scan_result", { uuids: [keep] })).body).to.deep.equal({ resolved: 1 });
    states = await byUuid();
    expect(states.get(otherNamespace)!.state).to.equal("resolved");
    expect(states.get(otherAgent)!.state).to.equal("detected");

    // Seen again: a finding a scan resolved is detected again; one a user resolved stays resolved.
    expect(await put(prod!, { cve: "CVE-2" })).to.equal(gone);
    await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${await id(keep)}/resolve`, admin());
    await put(prod!, { cve: "CVE-1" });
    states = await byUuid();
    expect(states.get(gone)).to.deep.include({ state: "detected", resolved_on_default_branch: false, resolved_at: null });
    expect(states.get(keep)!.state).to.equal("resolved");
    expect((await agentRequest(prod!, "POST", "/scan_result", { uuids: "x" })).status).to.equal(400);
    const text = await metrics.metrics();
    expect(text).to.match(/platform_vulnerabilities_resolved_by_scan_total 3/);
    expect(text).to.match(/platform_vulnerabilities\{severity="critical",state="resolved"\} 3/);
    expect(text).to.match(/platform_vulnerability_scan_results_total\{scope="namespaces"\} 1/);
  });

  it("answers policies_configuration as GitLab without policies, and hands requested scans to the agent once", async () => {
    const [prod, staging] = agents;
    expect(await agentRequest(prod!, "GET", "/policies_configuration")).to.deep.equal({ status: 404, body: { message: "404 Not Found" } });
    expect(await agentRequest(prod!, "GET", "/scan_requests")).to.deep.equal({ status: 200, body: { scan_requests: [] } });
    const scans = `/api/v4/projects/${projectId}/cluster_agents/${prod!.id}/vulnerability_scans`;
    const created = await call(platform.baseUrl, "POST", scans, { ...admin(), body: { namespaces: ["team-a", "team-a"] } });
    expect(created.status).to.equal(201);
    expect(created.body).to.deep.include({ agent_id: prod!.id, namespaces: ["team-a"], status: "pending", picked_up_at: null });
    expect((await call(platform.baseUrl, "POST", scans, { ...admin(), body: { namespaces: ["Not_A_Namespace"] } })).status).to.equal(400);
    // Another agent's poll does not take it.
    expect((await agentRequest(staging!, "GET", "/scan_requests")).body).to.deep.equal({ scan_requests: [] });
    expect((await agentRequest(prod!, "GET", "/scan_requests")).body).to.deep.equal({ scan_requests: [{ id: created.body.id, namespaces: ["team-a"] }] });
    expect((await agentRequest(prod!, "GET", "/scan_requests")).body).to.deep.equal({ scan_requests: [] });
    const listed = await call(platform.baseUrl, "GET", scans, admin());
    expect(listed.body[0]).to.include({ id: created.body.id, status: "picked_up" });
    expect((await agentRequest(prod!, "DELETE", "/")).status).to.equal(404);
  });

  it("lists with GitLab's order and kasbridge's filters, and changes states as GitLab's API (201, 304)", async () => {
    const [prod, staging] = agents;
    await agentRequest(prod!, "PUT", "/", report(prod!.id, { cve: "CVE-L", severity: "Low" }));
    await agentRequest(prod!, "PUT", "/", report(prod!.id, { cve: "CVE-C", severity: "Critical" }));
    await agentRequest(staging!, "PUT", "/", report(staging!.id, { cve: "CVE-H", severity: "High" }));
    await agentRequest(prod!, "PUT", "/", report(prod!.id, { cve: "CVE-C2", severity: "Critical" }));
    expect((await list()).map((v) => v.title)).to.deep.equal(["CVE-C2", "CVE-C", "CVE-H", "CVE-L"]);
    expect((await list("?severity[]=critical&severity[]=low")).map((v) => v.title)).to.deep.equal(["CVE-C2", "CVE-C", "CVE-L"]);
    expect((await list(`?cluster_agent_id=gid://gitlab/Clusters::Agent/${staging!.id}`)).map((v) => v.title)).to.deep.equal(["CVE-H"]);
    const page = await call(platform.baseUrl, "GET", `/api/v4/projects/${projectId}/vulnerabilities?per_page=1&page=2`, admin());
    expect(page.headers.get("x-total")).to.equal("4");
    expect(page.body.map((v: { title: string }) => v.title)).to.deep.equal(["CVE-C"]);
    expect((await call(platform.baseUrl, "GET", `/api/v4/projects/${projectId}/vulnerabilities?severity=dire`, admin())).status).to.equal(400);

    const id = (await list("?severity=high"))[0]!.id as number;
    const confirm = await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${id}/confirm`, { ...admin(), body: { comment: "triaged" } });
    expect(confirm.status).to.equal(201);
    expect(confirm.body).to.include({ state: "confirmed", confirmed_by_id: 1 });
    expect(confirm.body.confirmed_at).to.be.a("string");
    expect((await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${id}/confirm`, admin())).status).to.equal(304);
    const reverted = await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${id}/revert`, admin());
    expect(reverted.body).to.include({ state: "detected", confirmed_by_id: null, confirmed_at: null });
    expect((await list("?state=detected")).length).to.equal(4);

    // A reporter sees the project but not its vulnerabilities; a stranger does not see them at all.
    for (const [username, level] of [["rep", 20], ["stranger", 0]] as const) {
      const user = (await call(platform.baseUrl, "POST", "/api/v4/users", { ...admin(), body: { username, name: username, email: `${username}@example.com` } })).body;
      const pat = (await call(platform.baseUrl, "POST", `/api/v4/users/${user.id}/personal_access_tokens`, { ...admin(), body: { name: "t", scopes: ["api"] } })).body.token;
      if (level) await call(platform.baseUrl, "POST", `/api/v4/projects/${projectId}/members`, { ...admin(), body: { user_id: user.id, access_level: level } });
      const expected = level ? 403 : 404;
      expect((await call(platform.baseUrl, "GET", `/api/v4/projects/${projectId}/vulnerabilities`, { token: pat })).status).to.equal(expected);
      expect((await call(platform.baseUrl, "GET", `/api/v4/vulnerabilities/${id}`, { token: pat })).status).to.equal(expected);
      expect((await call(platform.baseUrl, "POST", `/api/v4/vulnerabilities/${id}/dismiss`, { token: pat })).status).to.equal(expected);
    }
    expect((await call(platform.baseUrl, "GET", "/api/v4/vulnerabilities/999999", admin())).status).to.equal(404);
  });
});
