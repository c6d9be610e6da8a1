import { expect } from "chai";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pino from "pino";
import { Gitops, type ObjectsToSynchronizeRequest, type ObjectsToSynchronizeResponse } from "../../../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ObjectsToSynchronizeRequestSchema } from "../../../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import { PlatformError, RepositoryFileTooLargeError, type ProjectInfo } from "../../../platform-client/platform-client.js";
import { createKasServer, type KasServer } from "../../../kas/kas-server.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { StaticPlatformClient } from "../../../platform-client/static-platform-client.test-support.js";
import { bearer } from "../../../grpc/interceptors.test-support.js";
import { rejection, waitFor } from "@kasbridge/testing/wait";
import { InMemoryGitPushEvents } from "../../notifications/server/git-push-events.js";
import { MANIFEST_CHUNK_BYTES, gitopsServerModule } from "./gitops-server-module.js";

/** A platform whose one project's repository is a map of commits to files. */
class RepoPlatform extends StaticPlatformClient {
  commits = new Map<string, Record<string, Uint8Array>>();
  refs = new Map<string, string>();
  async getProjectInfo(_token: string, fullPath: string): Promise<ProjectInfo> {
    if (fullPath !== "g/manifests") throw new PlatformError("not_found", "no such project");
    return { projectId: 42, defaultBranch: "main", fullPath };
  }
  async resolveRepositoryRevision(_projectId: number, revision: string) {
    return this.refs.get(revision) ?? (this.commits.has(revision) ? revision : undefined);
  }
  async listRepositoryFiles(_projectId: number, commit: string) {
    return Object.keys(this.commits.get(commit) ?? {}).sort();
  }
  async readRepositoryFile(_projectId: number, commit: string, path: string, maxBytes: number) {
    const data = this.commits.get(commit)?.[path];
    if (data && data.byteLength > maxBytes) throw new RepositoryFileTooLargeError(path, maxBytes);
    return data;
  }
}

describe("GitOps GetObjectsToSynchronize (KAS)", function () {
  this.timeout(20_000);
  const cleanup = new Cleanup();
  let kas: KasServer;
  let platform: RepoPlatform;
  let events: InMemoryGitPushEvents;
  const text = (s: string) => new TextEncoder().encode(s);

  beforeEach(async () => {
    platform = new RepoPlatform();
    platform.addToken("glagent-g", { agentId: 3, agentName: "g", projectId: 1, projectPath: "g/cfg", defaultBranch: "main" });
    events = new InMemoryGitPushEvents();
    kas = await createKasServer({
      platform,
      logger: pino({ level: "silent" }),
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: new Uint8Array(32) },
      modules: [gitopsServerModule({ platform, events, maxManifestFileBytes: 400 * 1024, maxTotalManifestFileBytes: 500 * 1024, maxNumberOfFiles: 5 })],
    });
    cleanup.add(() => kas.close(0));
  });
  afterEach(() => cleanup.run());

  function open(request: MessageInitShape<typeof ObjectsToSynchronizeRequestSchema>) {
    const sessions = new Http2SessionManager(kas.agentApi.url("http"));
    cleanup.add(() => sessions.abort());
    const client = createClient(Gitops, createGrpcTransport({ baseUrl: kas.agentApi.url("http"), sessionManager: sessions, interceptors: [bearer("glagent-g")] }));
    const abort = new AbortController();
    cleanup.add(() => abort.abort());
    const received: ObjectsToSynchronizeResponse[] = [];
    const done = (async () => {
      for await (const res of client.getObjectsToSynchronize(request as ObjectsToSynchronizeRequest, { signal: abort.signal })) received.push(res);
    })();
    done.catch(() => {});
    return { received, done };
  }
  const glob = (value: string) => ({ path: { case: "glob" as const, value } });
  const kinds = (r: ObjectsToSynchronizeResponse[]) => r.map((m) => (m.message.case === "object" ? `object:${m.message.value.source}:${m.message.value.data.byteLength}` : m.message.case));

  it("sends the matching files of the ref's commit in 128 KiB chunks, then each new commit after a push", async () => {
    const big = new Uint8Array(MANIFEST_CHUNK_BYTES * 2 + 10).fill(65);
    platform.commits.set("c1", { "a.yaml": text("a: 1"), "deploy/big.yaml": big, ".hidden/x.yaml": text("x"), "notes.txt": text("t") });
    platform.refs.set("HEAD", "c1");
    const s = open({ projectId: "g/manifests", paths: [glob("**/*.yaml")] });
    await waitFor(() => s.received.at(-1)?.message.case === "trailer");
    expect(kinds(s.received)).to.deep.equal([
      "header",
      "object:a.yaml:4",
      `object:deploy/big.yaml:${MANIFEST_CHUNK_BYTES}`,
      `object:deploy/big.yaml:${MANIFEST_CHUNK_BYTES}`,
      "object:deploy/big.yaml:10",
      "trailer",
    ]);
    expect(s.received[0]!.message.value).to.deep.include({ commitId: "c1", projectId: 42n });

    platform.commits.set("c2", { "a.yaml": text("a: 2") });
    platform.refs.set("HEAD", "c2");
    await events.publish({ projectId: 42, fullPath: "g/manifests" });
    await waitFor(() => s.received.length === 9);
    expect(kinds(s.received.slice(6))).to.deep.equal(["header", "object:a.yaml:4", "trailer"]);
    // A push that does not move the ref sends nothing: the next message is the next commit's header.
    await events.publish({ projectId: 42, fullPath: "g/manifests" });
    await events.publish({ projectId: 7, fullPath: "g/other" });
    platform.commits.set("c3", { "a.yaml": text("a: 3") });
    platform.refs.set("HEAD", "c3");
    await events.publish({ projectId: 42, fullPath: "g/manifests" });
    await waitFor(() => s.received.length === 12);
    expect(s.received[9]!.message.value).to.deep.include({ commitId: "c3" });
    const metrics = await kas.metrics.getMetricsAsJSON();
    expect(metrics.find((m) => m.name === "gitops_sync_total")?.values[0]?.value).to.equal(3);
    expect(kas.usage.pending()).to.deep.equal({ counters: { gitops_sync: 3 } });
  });

  it("sends nothing when the agent already has the commit, and resolves tags and branches", async () => {
    platform.commits.set("c1", { "a.yaml": text("a") });
    platform.commits.set("c9", { "b.yaml": text("b") });
    platform.refs.set("HEAD", "c1");
    platform.refs.set("refs/tags/v1", "c9");
    const known = open({ projectId: "g/manifests", commitId: "c1", paths: [glob("*.yaml")] });
    const tagged = open({ projectId: "g/manifests", ref: { ref: { case: "tag", value: "v1" } }, paths: [glob("*.yaml")] });
    await waitFor(() => tagged.received.at(-1)?.message.case === "trailer");
    expect(kinds(tagged.received)).to.deep.equal(["header", "object:b.yaml:1", "trailer"]);
    expect(known.received).to.deep.equal([]);
  });

  it("answers GitLab's errors: bad requests, unknown refs and projects, files over the limits, globs that overlap", async () => {
    platform.commits.set("c1", { "a.yaml": text("a"), "b.yaml": new Uint8Array(450 * 1024), "c.yaml": new Uint8Array(300 * 1024), "d.yaml": new Uint8Array(300 * 1024) });
    platform.refs.set("HEAD", "c1");
    const code = async (request: MessageInitShape<typeof ObjectsToSynchronizeRequestSchema>) => (await rejection(open(request).done)).code;
    expect(await code({ projectId: "", paths: [glob("*")] })).to.equal(Code.InvalidArgument);
    expect(await code({ projectId: "g/manifests", paths: [] })).to.equal(Code.InvalidArgument);
    expect(await code({ projectId: "g/nope", paths: [glob("*")] })).to.equal(Code.NotFound);
    expect(await code({ projectId: "g/manifests", ref: { ref: { case: "branch", value: "gone" } }, paths: [glob("*")] })).to.equal(Code.NotFound);
    expect(await code({ projectId: "g/manifests", paths: [glob("a.yaml"), glob("*.yaml")] })).to.equal(Code.FailedPrecondition);
    const tooBig = await rejection(open({ projectId: "g/manifests", paths: [glob("b.yaml")] }).done);
    expect(tooBig.code).to.equal(Code.FailedPrecondition);
    expect(tooBig.rawMessage).to.match(/b\.yaml is larger than 409600 bytes/);
    const total = await rejection(open({ projectId: "g/manifests", paths: [glob("[cd].yaml")] }).done);
    expect(total.rawMessage).to.match(/exceed 512000 bytes in total/);
  });

  it("polls an empty repository until it has commits", async () => {
    const s = open({ projectId: "g/manifests", paths: [glob("*.yaml")] });
    await waitFor(() => events.subscribers === 1, undefined, "the stream to watch the project");
    platform.commits.set("c1", { "a.yaml": text("a") });
    platform.refs.set("HEAD", "c1");
    await events.publish({ projectId: 42, fullPath: "g/manifests" });
    await waitFor(() => s.received.at(-1)?.message.case === "trailer");
    expect(kinds(s.received)).to.deep.equal(["header", "object:a.yaml:1", "trailer"]);
  });
});
