// GitLab Rails asks KAS which agents a configuration project defines:
// ConfigurationProject/ListAgentConfigFiles on the internal API (8153, the platform's JWT). Real kas,
// real git pushes to its platform.
import { rmSync } from "node:fs";
import { expect } from "chai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ConfigurationProject } from "@kasbridge/sdk/gen/gitlab/agent/configuration_project/rpc/rpc_pb";
import { internalApiClientInterceptor } from "@kasbridge/sdk/kas";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { rejection } from "@kasbridge/testing/wait";
import { GitClient } from "./git.test-support.js";
import { adminToken, api, startKas } from "./harness.test-support.js";

describe("e2e: ConfigurationProject/ListAgentConfigFiles on the internal API", function () {
  this.timeout(120_000);
  const cleanups = new Cleanup();
  const git = new GitClient();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  after(() => cleanups.run());

  it("lists .gitlab/agents/<name>/config.yaml with valid agent names at the branch asked for; refuses bad requests", async () => {
    const kas = await startKas();
    cleanups.add(() => kas.cleanup());
    const project = (await api(kas, "POST", "/projects", { name: "agents-config" })).json;
    const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
    const sessions = new Http2SessionManager(baseUrl);
    cleanups.add(() => sessions.abort());
    const client = createClient(ConfigurationProject, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [internalApiClientInterceptor(kas.secret, 0)] }));
    // As Rails sends it: the project's Gitaly repository (gl_repository project-<id>) and Gitaly's address.
    const list = async (defaultBranch = "", glRepository = `project-${project.id}`) =>
      (
        await client.listAgentConfigFiles({
          repository: { storageName: "default", relativePath: "@hashed/x.git", glRepository, glProjectPath: project.path_with_namespace },
          gitalyInfo: { address: "unix:/nonexistent/gitaly.socket" },
          defaultBranch,
        })
      ).configFiles.map((f) => [f.name, f.agentName]);

    // An empty repository defines no agents.
    expect(await list()).to.deep.equal([]);

    const u = new URL(kas.addresses.platform!);
    const wc = await git.clone(`http://root:${adminToken}@${u.host}/${project.path_with_namespace}.git`);
    await git.commit(wc, {
      ".gitlab/agents/prod/config.yaml": "ci_access: {}\n",
      ".gitlab/agents/staging-2/config.yaml": "",
      ".gitlab/agents/Bad_Name/config.yaml": "",
      ".gitlab/agents/notes/README.md": "",
      ".gitlab/agents/deep/sub/config.yaml": "",
      "config.yaml": "",
    });
    await git.push(wc);
    await git.commit(wc, { ".gitlab/agents/feature-only/config.yaml": "" });
    await git.push(wc, "feature");

    expect(await list()).to.deep.equal([
      [".gitlab/agents/prod/config.yaml", "prod"],
      [".gitlab/agents/staging-2/config.yaml", "staging-2"],
    ]);
    expect(await list("main")).to.deep.equal(await list());
    expect((await list("feature")).map(([, name]) => name)).to.deep.equal(["feature-only", "prod", "staging-2"]);
    expect(await list("no-such-branch")).to.deep.equal([]);

    const missing = await rejection(client.listAgentConfigFiles({ gitalyInfo: { address: "x" } }));
    expect(ConnectError.from(missing).code).to.equal(Code.InvalidArgument);
    expect(ConnectError.from(missing).rawMessage).to.equal("invalid ListAgentConfigFilesRequest.Repository: value is required");
    expect(ConnectError.from(await rejection(list("", "project-999999"))).code).to.equal(Code.NotFound);
    expect(ConnectError.from(await rejection(list("", "wiki-1"))).code).to.equal(Code.NotFound);
    const stranger = createClient(
      ConfigurationProject,
      createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [internalApiClientInterceptor(new Uint8Array(32).fill(3), 0)] }),
    );
    expect(ConnectError.from(await rejection(stranger.listAgentConfigFiles({}))).code).to.equal(Code.Unauthenticated);
  });
});
