// Workspaces end to end on the platform: REST create/list/show/update against a real git
// repository holding the devfile, and the agent's reconcile endpoint (registered as a module
// request route, also over the internal HTTP API), on SQLite and PostgreSQL.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import http from "node:http";
import { expect } from "chai";
import express from "express";
import { parseAllDocuments } from "yaml";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { createInternalApi } from "../api/internal-api.js";
import { AccessLevel } from "../services/access-levels.js";
import { createPlatformServices } from "../services/platform-services.js";
import { GitClient, startGitPlatform, type GitTestPlatform } from "../git/git-fixtures.test-support.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";
import { call, kasHeaders } from "../testing/http-fixtures.test-support.js";
import { VALID_DEVFILE } from "./devfile.test-support.js";
import type { WorkspaceAgentInfo } from "./states.js";

const RD_CONFIG = "remote_development:\n  enabled: true\n  dns_zone: ws.example.dev\n  network_policy:\n    enabled: false\n";

describeEachStore("remote development workspaces", (getStore) => {
  const cleanup = new Cleanup();
  let p: GitTestPlatform;
  let projectId: number;
  let agentId: number;
  let agentToken: string;
  let dev: { id: number; token: string };

  beforeEach(async function () {
    this.timeout(30_000);
    p = await startGitPlatform(getStore());
    cleanup.add(() => p.close());
    const project = await p.project("app");
    projectId = project.id;
    const git = await GitClient.create();
    cleanup.add(() => git.dispose());
    await git.ok(["clone", "-q", p.url(project, p.adminToken), "wc"]);
    await git.commit("wc", { ".devfile.yaml": VALID_DEVFILE, "bad.yaml": "schemaVersion: 2.2.0\ncomponents: []\n" });
    await git.ok(["push", "-q", "origin", "HEAD:refs/heads/main"], "wc");
    const agent = await p.services.agents.create(project.id, "dev-cluster", null);
    agentId = agent.id;
    agentToken = (await p.services.agentTokens.create(agent.id, { name: "t" }, null)).secret;
    expect((await p.services.agentConfigs.apply(agent.id, "c1", RD_CONFIG)).status).to.equal("accepted");
    dev = await p.user("dev");
    await p.addMember(project, dev.id, AccessLevel.DEVELOPER);
  });
  afterEach(() => cleanup.run());

  const create = (body: Record<string, unknown>, token = dev.token) => call(p.baseUrl, "POST", `/api/v4/projects/${projectId}/workspaces`, { token, body });
  const workspaceBody = () => ({ cluster_agent_id: agentId, devfile_ref: "main", devfile_path: ".devfile.yaml" });

  /** One reconcile request as the agent's module sends it (through the registered module route). */
  async function reconcileRequest(updateType: "full" | "partial", infos: WorkspaceAgentInfo[] = []) {
    const agent = (await p.services.agentTokens.authenticate(agentToken))!;
    return p.services.moduleRequests.handle("remote_development", {
      agent,
      method: "POST",
      path: "/reconcile",
      query: new URLSearchParams(),
      headers: new Headers({ "content-type": "application/json" }),
      body: Buffer.from(JSON.stringify({ update_type: updateType, workspace_agent_infos: infos })),
    });
  }

  /** One successful reconcile: the workspaces answered. */
  async function reconcile(updateType: "full" | "partial", infos: WorkspaceAgentInfo[] = []) {
    const res = await reconcileRequest(updateType, infos);
    expect(res.status, JSON.stringify(res.json)).to.equal(201);
    return (res.json as { workspace_rails_infos: Array<Record<string, unknown> & { name: string; config_to_apply: string | null }> }).workspace_rails_infos;
  }

  const kinds = (yaml: string) => parseAllDocuments(yaml).map((d) => (d.toJS() as { kind: string }).kind);
  const deploymentOf = (yaml: string) => parseAllDocuments(yaml).map((d) => d.toJS() as { kind: string; spec: { replicas: number } }).find((o) => o.kind === "Deployment")!;

  function deploymentInfo(resourceVersion: string, replicas: number, available: number, progressing = "NewReplicaSetAvailable") {
    return {
      metadata: { resourceVersion },
      spec: { replicas },
      status: {
        availableReplicas: available,
        conditions: [
          { type: "Available", reason: available === replicas ? "MinimumReplicasAvailable" : "MinimumReplicasUnavailable" },
          { type: "Progressing", reason: progressing },
        ],
      },
    };
  }

  it("creates a workspace from the devfile and shows it to its owner with the URL of each exposed port", async () => {
    const res = await create({ ...workspaceBody(), max_hours_before_termination: 2 });
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    const ws = res.body;
    expect(ws.name).to.match(new RegExp(`^workspace-${agentId}-${dev.id}-[a-z0-9]{6}$`));
    expect(ws.namespace).to.equal(ws.name.replace("workspace-", "gl-rd-ns-"));
    expect(ws).to.deep.include({ desired_state: "Running", actual_state: "CreationRequested", max_hours_before_termination: 2, dns_zone: "ws.example.dev" });
    // GitLab's editor, on the cloned project's folder; every public port, the editor's included.
    expect(ws.url).to.equal(`https://60001-${ws.name}.ws.example.dev/?folder=%2Fprojects%2Fapp`);
    expect(ws.urls).to.deep.equal([
      { name: "http-3000", port: 3000, url: `https://3000-${ws.name}.ws.example.dev/` },
      { name: "editor-server", port: 60001, url: `https://60001-${ws.name}.ws.example.dev/` },
    ]);

    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token })).body.id).to.equal(ws.id);
    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces`, { token: dev.token })).body.map((w: { id: number }) => w.id)).to.deep.equal([ws.id]);
    // Another developer of the project neither sees nor changes it.
    const other = await p.user("other");
    await p.addMember((await p.services.projects.get(projectId))!, other.id, AccessLevel.DEVELOPER);
    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: other.token })).status).to.equal(404);
    expect((await call(p.baseUrl, "PUT", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: other.token, body: { desired_state: "Stopped" } })).status).to.equal(404);
    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces`, { token: other.token })).body).to.deep.equal([]);
  });

  it("refuses what GitLab refuses, with clear errors, and stores nothing", async () => {
    const refusals: Array<[Record<string, unknown>, number, string]> = [
      [{ ...workspaceBody(), devfile_path: "bad.yaml" }, 400, "Invalid devfile bad.yaml: No components present in devfile"],
      [{ ...workspaceBody(), devfile_path: "missing.yaml" }, 400, "Devfile missing.yaml not found at ref main"],
      [{ ...workspaceBody(), max_hours_before_termination: 121 }, 400, "max_hours_before_termination must be an integer from 1 to 120"],
      [{ ...workspaceBody(), devfile_ref: undefined }, 400, "devfile_ref is missing"],
    ];
    for (const [body, status, message] of refusals) {
      const res = await create(body);
      expect(res.status, JSON.stringify(body)).to.equal(status);
      expect(JSON.stringify(res.body)).to.include(message);
    }
    // An agent without remote development enabled.
    await p.services.agentConfigs.apply(agentId, "c2", "remote_development:\n  enabled: false\n");
    const disabled = await create(workspaceBody());
    expect(disabled.status).to.equal(400);
    expect(disabled.body.message).to.include("does not have remote development enabled");
    // A Reporter may not create one.
    const reporter = await p.user("reporter");
    await p.addMember((await p.services.projects.get(projectId))!, reporter.id, AccessLevel.REPORTER);
    expect((await create(workspaceBody(), reporter.token)).status).to.equal(403);
    expect(await p.services.workspaces.list(projectId, undefined)).to.deep.equal([]);
  });

  it("reconciles: full sync applies everything, partial only changes, actual state follows the Deployment", async () => {
    const ws = (await create(workspaceBody())).body;
    const [first] = await reconcile("full");
    expect(first).to.deep.include({ name: ws.name, namespace: ws.namespace, actual_state: "CreationRequested", desired_state: "Running", deployment_resource_version: null });
    expect(kinds(first!.config_to_apply!)).to.deep.equal(["ConfigMap", "Deployment", "Service", "PersistentVolumeClaim", "PersistentVolumeClaim", "ConfigMap", "Secret", "Secret"]);
    expect(deploymentOf(first!.config_to_apply!).spec.replicas).to.equal(1);

    // Nothing changed, nothing reported: a partial sync returns nothing.
    expect(await reconcile("partial")).to.deep.equal([]);

    // The agent reports the Deployment rolling out, then available.
    const starting = await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, latest_k8s_deployment_info: deploymentInfo("11", 1, 0, "NewReplicaSetCreated") }]);
    expect(starting).to.deep.equal([
      { name: ws.name, namespace: ws.namespace, deployment_resource_version: "11", actual_state: "Starting", desired_state: "Running", config_to_apply: null },
    ]);
    await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, latest_k8s_deployment_info: deploymentInfo("12", 1, 1) }]);
    expect((await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token })).body.actual_state).to.equal("Running");

    // Stop: the next partial sync carries the new config (0 replicas, no Secrets).
    expect((await call(p.baseUrl, "PUT", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token, body: { desired_state: "Stopped" } })).status).to.equal(200);
    const [stop] = await reconcile("partial");
    expect(stop).to.deep.include({ desired_state: "Stopped", actual_state: "Running", deployment_resource_version: "12" });
    expect(kinds(stop!.config_to_apply!)).to.not.include("Secret");
    expect(deploymentOf(stop!.config_to_apply!).spec.replicas).to.equal(0);
    await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, latest_k8s_deployment_info: deploymentInfo("13", 0, 0) }]);

    // Restart: desired RestartRequested (0 replicas) becomes Running once the agent reports Stopped.
    await call(p.baseUrl, "PUT", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token, body: { desired_state: "RestartRequested" } });
    const [restart] = await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, latest_k8s_deployment_info: deploymentInfo("14", 0, 0) }]);
    expect(restart).to.deep.include({ desired_state: "Running", actual_state: "Stopped" });
    expect(deploymentOf(restart!.config_to_apply!).spec.replicas).to.equal(1);

    // A full sync returns every workspace not terminated, with everything to apply.
    const [full] = await reconcile("full");
    expect(kinds(full!.config_to_apply!)).to.include("Secret");

    // Terminate: no config; the agent reports progress until it hears Terminated.
    await call(p.baseUrl, "PUT", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token, body: { desired_state: "Terminated" } });
    const [term] = await reconcile("partial");
    expect(term).to.deep.include({ desired_state: "Terminated", config_to_apply: null });
    expect((await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, termination_progress: "Terminating" }]))[0]).to.deep.include({ actual_state: "Terminating" });
    expect((await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, termination_progress: "Terminated" }]))[0]).to.deep.include({ actual_state: "Terminated" });
    expect(await reconcile("full")).to.deep.equal([]);
    const changed = await call(p.baseUrl, "PUT", `/api/v4/projects/${projectId}/workspaces/${ws.id}`, { token: dev.token, body: { desired_state: "Running" } });
    expect(changed.status).to.equal(409);
  });

  it("puts the user's variables in the workspace's Secrets, stores them encrypted and never shows them", async () => {
    const variables = [
      { key: "API_URL", value: "https://api.example.dev", variable_type: "env_var" },
      { key: "DB_PASSWORD", value: "s3cret-pässword" },
      { key: "netrc", value: "machine example.dev login me password p4ss\n", variable_type: "file" },
    ];
    const res = await create({ ...workspaceBody(), variables });
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    expect(JSON.stringify(res.body)).to.not.include("s3cret").and.not.include("p4ss");
    const shown = await call(p.baseUrl, "GET", `/api/v4/projects/${projectId}/workspaces/${res.body.id}`, { token: dev.token });
    expect(JSON.stringify(shown.body)).to.not.include("s3cret");

    // At rest: one row each, none in clear, each bound to its row.
    const rows = (await getStore().knex("workspace_variables").where({ user_provided: true }).orderBy("id")) as Array<{ id: number; key: string; variable_type: string; encrypted_value: string }>;
    expect(rows.map((r) => [r.variable_type, r.key])).to.deep.equal([["env_var", "API_URL"], ["env_var", "DB_PASSWORD"], ["file", "netrc"]]);
    for (const r of await getStore().knex("workspace_variables")) expect(r.encrypted_value).to.match(/^v1:/).and.not.include("s3cret").and.not.include("example.dev").and.not.include("glpat-");

    // The full sync carries them base64 in the two Secrets, as GitLab's desired config does.
    const secrets = async () => {
      const [info] = await reconcile("full");
      const objects = parseAllDocuments(info!.config_to_apply!).map((d) => d.toJS() as { kind: string; metadata: { name: string }; data?: Record<string, string> });
      return Object.fromEntries(objects.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, o.data]));
    };
    const b64 = (v: string) => Buffer.from(v).toString("base64");
    const data = await secrets();
    expect(data[`${res.body.name}-env-var`]).to.deep.include({ API_URL: b64("https://api.example.dev"), DB_PASSWORD: b64("s3cret-pässword") });
    expect(data[`${res.body.name}-file`]).to.deep.include({ netrc: b64("machine example.dev login me password p4ss\n") });

    // A value moved to another row does not decrypt there: the reconcile fails rather than leak it.
    await getStore().knex("workspace_variables").where({ id: rows[0]!.id }).update({ encrypted_value: rows[1]!.encrypted_value });
    const broken = await reconcileRequest("full");
    expect(broken.status).to.equal(500);
    expect(JSON.stringify(broken.json)).to.not.include("s3cret");
  });

  it("adds GitLab's editor and project cloner; the clone works with the workspace's own token, revoked when it ends", async () => {
    // Created as REST does it, with the project's git URL as the workspace reaches it (here: this platform).
    const project = (await p.services.projects.get(projectId))!;
    const ws = await p.services.workspaces.create(dev.id, project, { agentId, devfileRef: "main", devfilePath: ".devfile.yaml", repositoryUrl: p.url(project) });
    const [info] = await reconcile("full");
    type Container = { name: string; command?: string[]; args?: string[]; env: Array<{ name: string; value: string }>; ports: Array<{ containerPort: number }> };
    type Obj = { kind: string; metadata: { name: string }; data?: Record<string, string>; spec: { ports?: Array<{ port: number }>; template?: { spec: { initContainers: Container[]; containers: Container[] } } } };
    const objects = parseAllDocuments(info!.config_to_apply!).map((d) => d.toJS() as Obj);
    const pod = objects.find((o) => o.kind === "Deployment")!.spec.template!.spec;
    expect(pod.initContainers.map((c) => c.name)).to.deep.equal(["gl-editor-injector", "gl-cloner-injector"]);
    expect(pod.containers.map((c) => c.name)).to.deep.equal(["tooling"]);
    const editor = pod.containers[0]!;
    expect(editor.command).to.deep.equal(["/bin/sh", "-c"]);
    expect(editor.args).to.deep.equal(["/projects/.gl-editor/start_server.sh"]);
    expect(editor.env).to.deep.include({ name: "EDITOR_PORT", value: "60001" });
    expect(editor.ports.map((x) => x.containerPort)).to.deep.equal([3000, 9229, 60001, 60022]);
    expect(objects.find((o) => o.kind === "Service")!.spec.ports!.map((x) => x.port)).to.deep.equal([3000, 9229, 60001, 60022]);

    // The Secrets: GitLab's git variables and a token of the workspace's own.
    const secret = (suffix: string) =>
      Object.fromEntries(Object.entries(objects.find((o) => o.metadata.name === `${ws.name}-${suffix}`)!.data!).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
    const env = secret("env-var");
    const files = secret("file");
    expect(env).to.deep.include({ GIT_CONFIG_COUNT: "3", GIT_CONFIG_KEY_0: "credential.helper", GIT_CONFIG_KEY_1: "user.name", GIT_CONFIG_VALUE_1: "dev", GL_WORKSPACE_DOMAIN_TEMPLATE: `\${PORT}-${ws.name}.ws.example.dev` });
    const token = await p.services.personalAccessTokens.authenticate(files.gl_token!);
    expect(token?.user.id).to.equal(dev.id);
    expect(token?.token.scopes).to.deep.equal(["read_repository", "write_repository"]);

    // Run the generated cloner as the pod would: its script, the Secrets' variables and files
    // (their mount paths moved into a temporary folder), against this platform's private repository.
    const root = await mkdtemp(join(tmpdir(), "kasbridge-workspace-"));
    cleanup.add(() => rm(root, { recursive: true, force: true }));
    const moved = (v: string) => v.replaceAll("/.workspace-data/variables/file", join(root, "files")).replaceAll("/projects", join(root, "projects"));
    await mkdir(join(root, "files"));
    await mkdir(join(root, "projects"));
    for (const [name, content] of Object.entries(files)) await writeFile(join(root, "files", name), content, { mode: 0o774 });
    const cloner = pod.initContainers[1]!;
    const podEnv = { PATH: process.env.PATH!, HOME: root, GIT_CONFIG_NOSYSTEM: "1", GIT_TERMINAL_PROMPT: "0", ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, moved(v)])) };
    await promisify(execFile)(cloner.command![0]!, [...cloner.command!.slice(1), moved(cloner.args![0]!)], { env: podEnv });
    expect(await readFile(join(root, "projects", "app", ".devfile.yaml"), "utf8")).to.equal(VALID_DEVFILE);
    // A second start keeps what is there (the user's changes).
    await writeFile(join(root, "projects", "app", "local.txt"), "mine");
    await promisify(execFile)(cloner.command![0]!, [...cloner.command!.slice(1), moved(cloner.args![0]!)], { env: podEnv });
    expect(await readFile(join(root, "projects", "app", "local.txt"), "utf8")).to.equal("mine");

    // Terminated: the token stops working.
    await p.services.workspaces.updateDesiredState(ws, "Terminated");
    await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, termination_progress: "Terminated" }]);
    expect(await p.services.personalAccessTokens.authenticate(files.gl_token!)).to.equal(undefined);
  });

  it("refuses bad variables naming the entry, and stores nothing", async () => {
    const refusals: Array<[unknown, string]> = [
      ["API_URL=x", "variables must be an array"],
      [[{ key: "1BAD", value: "x" }], 'variables[0].key "1BAD" is not an environment variable name'],
      [[{ key: "A", value: "x" }, { key: "A", value: "y" }], 'variables[1].key "A" is given twice'],
      [[{ key: "GL_TOKEN", value: "x" }], "the prefix GL_ is reserved"],
      [[{ key: "../etc", value: "x", variable_type: "file" }], "is not a file name"],
      [[{ key: "A", value: 1 }], "variables[0].value must be a string"],
      [[{ key: "A", value: "x", variable_type: "secret" }], "variables[0].variable_type must be env_var or file"],
      [[{ key: "A", value: "x".repeat(64 * 1024 + 1) }], "variables[0].value is over 65536 bytes"],
      [Array.from({ length: 101 }, (_, i) => ({ key: `K${i}`, value: "v" })), "at most 100 variables"],
    ];
    for (const [variables, message] of refusals) {
      const res = await create({ ...workspaceBody(), variables });
      expect(res.status, message).to.equal(400);
      expect(JSON.stringify(res.body)).to.include(message.replace(/"/g, '\\"'));
    }
    // A platform without an encryption key stores no variables.
    const keyless = createPlatformServices({ store: getStore() });
    const project = (await p.services.projects.get(projectId))!;
    const input = { agentId, devfileRef: "main", devfilePath: ".devfile.yaml", variables: [{ key: "A", value: "x", type: "env_var" as const }] };
    const error = await keyless.workspaces.create(dev.id, project, input).then(() => undefined, (err: Error) => err);
    expect(error?.message).to.include("need the platform's encryption key");
    expect(await p.services.workspaces.list(projectId, undefined)).to.deep.equal([]);
    expect(Number((await getStore().knex("workspace_variables").count({ n: "*" }))[0]!.n)).to.equal(0);
  });

  it("reports apply errors as the Error state and terminates workspaces past max_hours_before_termination", async () => {
    const ws = (await create({ ...workspaceBody(), max_hours_before_termination: 1 })).body;
    await reconcile("full");
    const [failed] = await reconcile("partial", [{ name: ws.name, namespace: ws.namespace, error_details: { error_type: "applier", error_message: "denied" } }]);
    expect(failed).to.deep.include({ actual_state: "Error" });
    await getStore().knex("workspaces").where({ id: ws.id }).update({ created_at: new Date(Date.now() - 3_600_001).toISOString() });
    const [expired] = await reconcile("partial");
    expect(expired).to.deep.include({ desired_state: "Terminated" });
  });

  it("answers the agent over the internal API, refusing requests GitLab's validator refuses", async () => {
    const jwtSecret = new Uint8Array(randomBytes(32));
    const app = express();
    app.use(createInternalApi({ services: p.services, jwtSecret }));
    const server = http.createServer(app);
    const port = await listen(server);
    cleanup.add(() => closeServer(server));
    const url = `http://127.0.0.1:${port}`;
    const path = "/api/v4/internal/kubernetes/modules/remote_development/reconcile";
    const post = async (body: unknown) => call(url, "POST", path, { headers: await kasHeaders(jwtSecret, agentToken), rawBody: JSON.stringify(body) });
    const ok = await post({ update_type: "full", workspace_agent_infos: [] });
    expect(ok.status).to.equal(201);
    expect(ok.body).to.deep.equal({ workspace_rails_infos: [] });
    const bad: Array<[unknown, string]> = [
      [{ workspace_agent_infos: [] }, 'update_type is required and must be "full" or "partial"'],
      [{ update_type: "full" }, "workspace_agent_infos is required and must be an array"],
      [{ update_type: "partial", workspace_agent_infos: [{ name: "w", namespace: "n", termination_progress: "Gone" }] }, "workspace_agent_infos[0].termination_progress must be one of Terminating, Terminated"],
      [{ update_type: "partial", workspace_agent_infos: [{ name: "w", namespace: "n", error_details: { error_type: "oops" } }] }, "workspace_agent_infos[0].error_details.error_type is required and must be one of applier, kubernetes"],
    ];
    for (const [body, error] of bad) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).to.equal(400);
      expect(res.body).to.deep.equal({ error });
    }
  });
});
