// The platform side of a real `kas` under hostile or unauthorized input: ci_access environment
// patterns, pushes to the protected default branch, oversized bodies, the admin token file.
import { linkSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { signKasApiRequestJwt } from "@kasbridge/sdk/auth";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { GitClient } from "./git.test-support.js";
import { adminToken, api, createAgentWithToken, startKas, type KasProcess } from "./harness.test-support.js";

describe("e2e: platform hardening (real kas)", function () {
  this.timeout(120_000);
  let kas: Awaited<ReturnType<typeof startKas>>;
  // Released last to first, each step even when another throws.
  const cleanups = new Cleanup();
  const git = new GitClient();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));

  before(async () => {
    kas = await startKas({ KAS_MAX_REQUEST_BODY_BYTES: "16384", KAS_MAX_PUSH_BYTES: "262144" });
    cleanups.add(() => kas.cleanup());
  });
  after(() => cleanups.run());

  function repoUrl(pathWithNamespace: string, token = adminToken): string {
    return `http://root:${token}@${new URL(kas.addresses.platform!).host}/${pathWithNamespace}.git`;
  }

  async function userWithToken(username: string): Promise<{ id: number; token: string }> {
    const user = await api(kas, "POST", "/users", { username, name: username, email: `${username}@example.com` });
    expect(user.status, JSON.stringify(user.json)).to.equal(201);
    const pat = await api(kas, "POST", `/users/${user.json.id}/personal_access_tokens`, { name: "git", scopes: ["api"] });
    return { id: user.json.id as number, token: pat.json.token as string };
  }

  async function job(projectId: number, environment: string) {
    const res = await api(kas, "POST", `/projects/${projectId}/jobs`, { environment });
    expect(res.status, JSON.stringify(res.json)).to.equal(201);
    const allowed = await fetch(`${kas.addresses.platform}/api/v4/job/allowed_agents`, { headers: { "Job-Token": res.json.token } });
    expect(allowed.status).to.equal(200);
    const body = (await allowed.json()) as { allowed_agents: { id: number }[] };
    return body.allowed_agents.map((a) => a.id);
  }

  it("matches ci_access environments as GitLab (anchored, only * special) and a hostile pattern does not stall kas", async () => {
    const agent = await createAgentWithToken(kas, "redos");
    const config = (await api(kas, "GET", `/projects/${agent.projectId}`)).json;
    const apps: Record<string, number> = {};
    for (const name of ["hostile", "review"]) {
      const p = await api(kas, "POST", "/projects", { name });
      expect(p.status).to.equal(201);
      apps[name] = p.json.id as number;
    }
    // Pushed over git like any config: a regex-shaped pattern, and a plain wildcard.
    const wc = await git.clone(repoUrl(config.path_with_namespace));
    await git.commit(wc, {
      ".gitlab/agents/redos/config.yaml":
        "ci_access:\n  projects:\n    - id: root/hostile\n      environments: ['(a+)+b*']\n    - id: root/review\n      environments: ['review/*']\n",
    });
    await git.push(wc);
    const state = (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json;
    expect(state.config_error).to.equal(null);

    // With `new RegExp("(a+)+b.*")` this job (40 a's) froze kas for hours: the test would time out.
    expect(await job(apps.hostile!, "a".repeat(40))).to.deep.equal([]);
    expect(await job(apps.review!, "review/feature-1")).to.deep.equal([agent.agentId]);
    expect(await job(apps.review!, "old-review/feature-1")).to.deep.equal([]); // anchored, as GitLab
  });

  it("keeps Developers off the agent's default branch: their config push is refused and changes nothing", async () => {
    const agent = await createAgentWithToken(kas, "guarded");
    const config = (await api(kas, "GET", `/projects/${agent.projectId}`)).json;
    const protectedBranches = await api(kas, "GET", `/projects/${agent.projectId}/protected_branches`);
    expect(protectedBranches.json.map((b: { name: string }) => b.name)).to.deep.equal(["main"]);
    expect(protectedBranches.json[0].push_access_levels[0].access_level).to.equal(40);

    const configPath = ".gitlab/agents/guarded/config.yaml";
    const wc = await git.clone(repoUrl(config.path_with_namespace));
    const good = await git.commit(wc, { [configPath]: "ci_access:\n  projects:\n    - id: root/app\n" });
    await git.push(wc);

    const dev = await userWithToken("developer");
    expect((await api(kas, "POST", `/projects/${agent.projectId}/members`, { user_id: dev.id, access_level: 30 })).status).to.equal(201);
    const devWc = await git.clone(repoUrl(config.path_with_namespace, dev.token));
    await git.commit(devWc, { [configPath]: "ci_access:\n  groups:\n    - id: root\n" });
    const refused = await git.push(devWc).then(() => undefined, (e: Error) => e);
    expect(refused?.message).to.include("GitLab: You are not allowed to push code to protected branches on this project.");
    expect(refused?.message).to.include("pre-receive hook declined");
    expect((await git.git(wc, "ls-remote", "origin", "refs/heads/main")).split(/\s/)[0]).to.equal(good);
    const agentState = (await api(kas, "GET", `/projects/${agent.projectId}/cluster_agents/${agent.agentId}`)).json;
    expect(agentState.config_commit_id).to.equal(good);
    // Their own branch is fine; it is not the agent's configuration.
    await git.push(devWc, "dev-branch");
  });

  it("refuses oversized pushes and API bodies with 413 naming the limit and its setting, and loses nothing", async () => {
    const project = await api(kas, "POST", "/projects", { name: "sizes" });
    const wc = await git.clone(repoUrl(project.json.path_with_namespace));
    const first = await git.commit(wc, { "README.md": "small\n" });
    await git.push(wc);
    await git.commit(wc, { "blob.bin": randomBytes(1024 * 1024).toString("base64") });
    const refused = await git.push(wc).then(() => undefined, (e: Error) => e);
    expect(refused?.message).to.include("HTTP 413");
    expect((await git.git(wc, "ls-remote", "origin", "refs/heads/main")).split(/\s/)[0]).to.equal(first);

    const declared = await post(kas, `/${project.json.path_with_namespace}.git/git-receive-pack`, {
      authorization: `Bearer ${adminToken}`,
      "content-type": "application/x-git-receive-pack-request",
      "content-length": String(1024 * 1024),
    });
    expect(declared.status).to.equal(413);
    expect(declared.text).to.equal(
      "Request Entity Too Large: the push is larger than 262144 bytes, the limit set by max_push_bytes (KAS_MAX_PUSH_BYTES)\n",
    );

    const rest = await api(kas, "POST", "/projects", { name: "x", description: "d".repeat(32 * 1024) });
    expect(rest.status).to.equal(413);
    expect(rest.json.message).to.equal(
      "413 Request Entity Too Large - the request body is larger than 16384 bytes, the limit set by max_request_body_bytes (KAS_MAX_REQUEST_BODY_BYTES)",
    );
    const internal = await fetch(`${kas.addresses.platform}/api/v4/internal/kubernetes/authorize_proxy_user`, {
      method: "POST",
      headers: { "content-type": "application/json", "Gitlab-Kas-Api-Request": await signKasApiRequestJwt(kas.secret) },
      body: JSON.stringify({ agent_id: 1, access_type: "personal_access_token", access_key: "k".repeat(32 * 1024) }),
    });
    expect(internal.status).to.equal(413);
    expect(((await internal.json()) as { message: string }).message).to.include("max_request_body_bytes (KAS_MAX_REQUEST_BODY_BYTES)");
    // kas is unharmed.
    expect((await api(kas, "GET", "/user")).status).to.equal(200);
  });

  it("writes a generated admin token 0600, replacing a leftover readable file instead of writing through it", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "kas-e2e-token-"));
    const tokenFile = join(dataDir, "admin-token");
    writeFileSync(tokenFile, "old\n", { mode: 0o644 });
    linkSync(tokenFile, join(dataDir, "old-link"));
    const fresh = await startKas({ KAS_ADMIN_TOKEN: "" }, dataDir);
    try {
      await fresh.waitFor(/Admin personal access token for user root/);
      expect(statSync(tokenFile).mode & 0o777).to.equal(0o600);
      const token = readFileSync(tokenFile, "utf8").trim();
      expect(readFileSync(join(dataDir, "old-link"), "utf8")).to.equal("old\n");
      expect((await api(fresh, "GET", "/user", undefined, token)).json.username).to.equal("root");
    } finally {
      await fresh.cleanup();
    }
  });
});

/** A POST whose body is never sent: only the declared headers go out. */
function post(kas: KasProcess, path: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${kas.addresses.platform}${path}`, { method: "POST", headers });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (d: string) => (text += d));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, text });
        req.destroy();
      });
    });
    req.on("error", (err) => (req.destroyed ? undefined : reject(err)));
    req.flushHeaders();
  });
}
