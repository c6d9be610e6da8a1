import { rmSync } from "node:fs";
import { expect } from "chai";
import { GitClient } from "./git.test-support.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { adminToken, api, createAgentWithToken, startAgentk, startKas } from "./harness.test-support.js";

describe("e2e: agent configuration from git (push -> GetConfiguration)", function () {
  this.timeout(180_000);
  let kas: Awaited<ReturnType<typeof startKas>>;
  const git = new GitClient();
  const cleanups = new Cleanup();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));

  before(async () => {
    kas = await startKas();
    cleanups.add(() => kas.cleanup());
  });
  after(() => cleanups.run());

  /** agentk's log line for an applied config of `commit`. */
  const applied = (commit: string) =>
    new RegExp(`"commitId":"${commit}"[^\\n]*applied agent configuration|applied agent configuration[^\\n]*"commitId":"${commit}"`);

  function repoUrl(pathWithNamespace: string, token = adminToken): string {
    const u = new URL(kas.addresses.platform!);
    return `http://root:${token}@${u.host}/${pathWithNamespace}.git`;
  }

  it("delivers pushed configs to the connected agent, keeps the last valid one, refuses strangers", async () => {
    const name = "prod";
    const a = await createAgentWithToken(kas, name);
    const project = (await api(kas, "GET", `/projects/${a.projectId}`)).json;
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/applied agent configuration.*"commitId":"0{40}"|"commitId":"0{40}".*applied agent configuration/);

    // A valid config: the agent applies it (how fast: `npm run bench`, "push -> agent applied").
    const wc = await git.clone(repoUrl(project.path_with_namespace));
    const configPath = `.gitlab/agents/${name}/config.yaml`;
    const good = await git.commit(wc, {
      [configPath]: "observability:\n  logging:\n    level: debug\nci_access:\n  projects:\n    - id: root/other\n",
    });
    await git.push(wc);
    await agentk.waitFor(applied(good));
    // The log level from the config applies: agentk now logs at debug.
    expect(agentk.output).to.match(/"logLevel":"debug"/);

    let agent = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}`)).json;
    expect(agent.config_commit_id).to.equal(good);
    expect(agent.config_error).to.equal(null);

    // An invalid config: recorded with key and line, the old config stays, the agent gets nothing.
    const bad = await git.commit(wc, {
      [configPath]: "observability:\n  logging:\n    level: debug\nci_acess:\n  projects: []\n",
    });
    await git.push(wc);
    await waitFor(
      async () => (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}`)).json.config_error !== null,
      undefined,
      "config error recorded",
    );
    agent = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}`)).json;
    expect(agent.config_commit_id).to.equal(good);
    expect(agent.config_error.commit_id).to.equal(bad);
    expect(agent.config_error.message).to.match(/ci_acess/).and.match(/line 4/);
    // The agent's health names it as its last error.
    const health = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}/health`)).json;
    expect(health.last_error).to.deep.include({ source: "configuration", commit_id: bad });
    expect(health.last_error.message).to.equal(agent.config_error.message);
    // A later valid config reaches the agent; the invalid one, pushed before it, never did.
    const fixed = await git.commit(wc, { [configPath]: "observability:\n  logging:\n    level: info\n" });
    await git.push(wc);
    await agentk.waitFor(applied(fixed));
    expect(agentk.output).to.not.include(bad);

    // The raw file API shows what is on the default branch.
    const raw = await fetch(
      `${kas.addresses.platform}/api/v4/projects/${a.projectId}/repository/files/${encodeURIComponent(configPath)}/raw?ref=main`,
      { headers: { "PRIVATE-TOKEN": adminToken } },
    );
    expect(raw.status).to.equal(200);
    expect(await raw.text()).to.equal("observability:\n  logging:\n    level: info\n");

    // A user without access cannot push; nothing changes.
    const user = await api(kas, "POST", "/users", { username: "stranger", name: "Stranger", email: "s@example.com" });
    expect(user.status).to.equal(201);
    const pat = await api(kas, "POST", `/users/${user.json.id}/personal_access_tokens`, { name: "git", scopes: ["api"] });
    const strangerWc = await git.clone(repoUrl(project.path_with_namespace)).then(async (dir) => {
      await git.git(dir, "remote", "set-url", "origin", repoUrl(project.path_with_namespace, pat.json.token));
      return dir;
    });
    await git.commit(strangerWc, { [configPath]: "observability:\n  logging:\n    level: error\n" });
    const refused = await git.push(strangerWc).then(() => undefined, (e: Error) => e);
    expect(refused, "stranger's push must fail").to.be.instanceOf(Error);
    const head = await git.git(wc, "ls-remote", "origin", "refs/heads/main");
    expect(head.split(/\s/)[0]).to.equal(fixed);
  });

  it("loses nothing when several clients push at once", async () => {
    const a = await createAgentWithToken(kas, "busy");
    const project = (await api(kas, "GET", `/projects/${a.projectId}`)).json;
    const seed = await git.clone(repoUrl(project.path_with_namespace));
    await git.commit(seed, { "README.md": "seed\n" });
    await git.push(seed);
    const clients = await Promise.all(Array.from({ length: 6 }, () => git.clone(repoUrl(project.path_with_namespace))));
    const commits = await Promise.all(clients.map((dir, i) => git.commit(dir, { [`file-${i}.txt`]: `${i}\n` })));
    await Promise.all(clients.map((dir, i) => git.push(dir, `branch-${i}`)));
    const refs = await git.git(seed, "ls-remote", "origin");
    commits.forEach((commit, i) => expect(refs).to.include(`${commit}\trefs/heads/branch-${i}`));

    // Rapid successive config pushes to the default branch: the last one wins and is delivered.
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    let last = "";
    for (const level of ["warn", "error", "info", "debug"]) {
      last = await git.commit(seed, { ".gitlab/agents/busy/config.yaml": `observability:\n  logging:\n    level: ${level}\n` });
      await git.push(seed);
    }
    await agentk.waitFor(new RegExp(last));
    const agent = (await api(kas, "GET", `/projects/${a.projectId}/cluster_agents/${a.agentId}`)).json;
    expect(agent.config_commit_id).to.equal(last);
  });
});
