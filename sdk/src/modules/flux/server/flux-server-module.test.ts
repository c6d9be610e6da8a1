import { expect } from "chai";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Code } from "@connectrpc/connect";
import { GitLabFlux, type ReconcileProjectsResponse } from "../../../gen/gitlab/agent/flux/rpc/rpc_pb.js";
import { Notifications } from "../../../gen/gitlab/agent/notifications/rpc/rpc_pb.js";
import type { KasServer } from "../../../kas/kas-server.js";
import { internalApiClientInterceptor } from "../../../kas/internal-api-auth.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import type { StaticPlatformClient } from "../../../platform-client/static-platform-client.test-support.js";
import { bearer } from "../../../grpc/interceptors.test-support.js";
import { rejection, waitFor } from "@kasbridge/testing/wait";
import { InMemoryGitPushEvents } from "../../notifications/server/git-push-events.js";
import { startFluxKas } from "./flux-kas.test-support.js";

describe("Flux ReconcileProjects (KAS) with Notifications/GitPushEvent", function () {
  this.timeout(20_000);
  const secret = new Uint8Array(32).fill(7);
  const cleanup = new Cleanup();
  let kas: KasServer;
  let platform: StaticPlatformClient;
  let events: InMemoryGitPushEvents;

  beforeEach(async () => {
    events = new InMemoryGitPushEvents();
    ({ kas, platform } = await startFluxKas({ events, jwtSecret: secret, token: "glagent-a", readable: ["g/app", "g/config"], cleanup }));
  });
  afterEach(() => cleanup.run());

  function client<S extends typeof GitLabFlux | typeof Notifications>(service: S, baseUrl: string, interceptors: Parameters<typeof createGrpcTransport>[0]["interceptors"]) {
    const sessions = new Http2SessionManager(baseUrl);
    cleanup.add(() => sessions.abort());
    return createClient(service, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors }));
  }
  const agentClient = (token: string) => client(GitLabFlux, kas.agentApi.url("http"), [bearer(token)]);
  const platformClient = (jwtSecret = secret) =>
    client(Notifications, `http://127.0.0.1:${kas.internalApiAddress.port}`, [internalApiClientInterceptor(jwtSecret, 0)]);
  const push = (id: number, fullPath: string, jwtSecret = secret) =>
    platformClient(jwtSecret).gitPushEvent({ event: { project: { id: BigInt(id), fullPath } } });

  /** Opens a stream and collects what it receives. */
  function open(token: string, projects: string[]) {
    const abort = new AbortController();
    cleanup.add(() => abort.abort());
    const received: ReconcileProjectsResponse[] = [];
    const done = (async () => {
      for await (const res of agentClient(token).reconcileProjects({ project: projects.map((id) => ({ id })) }, { signal: abort.signal })) received.push(res);
    })();
    done.catch(() => {});
    return { received, done, abort };
  }

  it("sends a push of a watched project the agent may read, and nothing else", async () => {
    const stream = open("glagent-a", ["g/app", "g/secret"]);
    await waitFor(() => events.subscribers === 1, undefined, "stream subscribed");
    platform.readableProjects.get("glagent-a")!.add("g/later"); // readable but not watched
    await push(11, "g/later");
    await push(12, "g/secret"); // watched but not readable
    await push(13, "g/app");
    await waitFor(() => stream.received.length >= 1);
    expect(stream.received.map((r) => r.project?.id)).to.deep.equal(["g/app"]);
    // The unreadable project was checked (and refused); the unwatched one never was.
    expect(platform.accessChecks).to.equal(2);

    // A second push of the same project uses the cached answer.
    await push(13, "g/app");
    await waitFor(() => stream.received.length === 2);
    expect(platform.accessChecks).to.equal(2);
    const metrics = await kas.metrics.getMetricsAsJSON();
    const value = (name: string) => metrics.find((m) => m.name === name)?.values[0]?.value;
    expect(value("flux_git_push_notifications_total")).to.equal(2);
    expect(value("flux_git_push_notified_unique_projects")).to.equal(1);
    // The same, as GitLab's usage events for the platform (the numeric project id).
    expect(kas.usage.pending()).to.deep.equal({
      counters: { flux_git_push_notifications_total: 2 },
      unique_counters: { flux_git_push_notified_unique_projects: [13] },
    });
  });

  it("refuses a push event without the platform's JWT or with missing fields", async () => {
    expect((await rejection(push(1, "g/app", new Uint8Array(32).fill(1)))).code).to.equal(Code.Unauthenticated);
    expect((await rejection(push(0, "g/app"))).code).to.equal(Code.InvalidArgument);
    expect((await rejection(push(1, ""))).code).to.equal(Code.InvalidArgument);
    expect((await rejection(platformClient().gitPushEvent({}))).code).to.equal(Code.InvalidArgument);
  });

  it("refuses unknown tokens and empty project ids, and ends streams when the token is revoked", async () => {
    expect((await rejection(open("glagent-nope", ["g/app"]).done)).code).to.equal(Code.Unauthenticated);
    expect((await rejection(open("glagent-a", [""]).done)).code).to.equal(Code.InvalidArgument);
    const stream = open("glagent-a", ["g/app"]);
    await waitFor(() => events.subscribers === 1, undefined, "stream subscribed");
    platform.revoke("glagent-a");
    expect((await rejection(stream.done)).code).to.equal(Code.Unauthenticated);
    await waitFor(() => events.subscribers === 0, undefined, "subscription released");
  });
});
