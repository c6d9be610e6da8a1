import { expect } from "chai";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { GitLabFlux, type ReconcileProjectsResponse } from "../../../gen/gitlab/agent/flux/rpc/rpc_pb.js";
import { Notifications } from "../../../gen/gitlab/agent/notifications/rpc/rpc_pb.js";
import type { KasServer } from "../../../kas/kas-server.js";
import { internalApiClientInterceptor } from "../../../kas/internal-api-auth.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { bearer } from "../../../grpc/interceptors.test-support.js";
import { redisConnection, uniqueRedisName } from "@kasbridge/testing/redis";
import { waitFor } from "@kasbridge/testing/wait";
import { startFluxKas } from "../../flux/server/flux-kas.test-support.js";
import { KAS_EVENTS_CHANNEL, RedisGitPushEvents, decodeEvent, encodeEvent } from "./redis-git-push-events.js";

describe("git push events between KAS replicas over Redis (kas_events)", function () {
  this.timeout(20_000);
  const cleanup = new Cleanup();
  const secret = new Uint8Array(32).fill(5);
  afterEach(() => cleanup.run());

  /** A KAS with the notifications and Flux modules on the shared channel. */
  async function replica(channel: string): Promise<{ kas: KasServer; events: RedisGitPushEvents }> {
    const publisher = await redisConnection();
    const subscriber = await redisConnection();
    cleanup.add(() => (publisher.disconnect(), subscriber.disconnect()));
    const events = new RedisGitPushEvents({ publisher, subscriber, channel });
    await events.start();
    cleanup.add(() => events.close());
    const { kas } = await startFluxKas({ events, jwtSecret: secret, token: "glagent-r", readable: ["g/app"], cleanup });
    return { kas, events };
  }

  function sessions(url: string) {
    const s = new Http2SessionManager(url);
    cleanup.add(() => s.abort());
    return s;
  }

  it("delivers a push sent to one replica to the Flux streams of another, in GitLab's wire format", async () => {
    const channel = uniqueRedisName(KAS_EVENTS_CHANNEL);
    const a = await replica(channel);
    const b = await replica(channel);
    // What a GitLab KAS on the same Redis would read.
    const raw: Buffer[] = [];
    const tap = await redisConnection();
    cleanup.add(() => tap.disconnect());
    tap.on("messageBuffer", (_c: Buffer, m: Buffer) => raw.push(m));
    await tap.subscribe(channel);

    // The agent holds its stream on replica B.
    const url = b.kas.agentApi.url("http");
    const flux = createClient(GitLabFlux, createGrpcTransport({ baseUrl: url, sessionManager: sessions(url), interceptors: [bearer("glagent-r")] }));
    const abort = new AbortController();
    cleanup.add(() => abort.abort());
    const received: ReconcileProjectsResponse[] = [];
    void (async () => {
      for await (const r of flux.reconcileProjects({ project: [{ id: "g/app" }] }, { signal: abort.signal })) received.push(r);
    })().catch(() => {});
    await waitFor(() => b.events.subscribers === 1, undefined, "replica B's stream to subscribe");

    // The platform calls replica A.
    const internal = `http://127.0.0.1:${a.kas.internalApiAddress.port}`;
    const notifications = createClient(
      Notifications,
      createGrpcTransport({ baseUrl: internal, sessionManager: sessions(internal), interceptors: [internalApiClientInterceptor(secret, 0)] }),
    );
    await notifications.gitPushEvent({ event: { project: { id: 7n, fullPath: "g/app" } } });
    await waitFor(() => received.length > 0, undefined, "the push to reach replica B's stream");
    expect(received[0]!.project?.id).to.equal("g/app");
    await waitFor(() => raw.length > 0);
    expect(decodeEvent(raw[0]!)).to.deep.equal({ projectId: 7, fullPath: "g/app" });
    // type.googleapis.com/gitlab.agent.event.GitPushEvent inside a google.protobuf.Any.
    expect(raw[0]!.toString("latin1")).to.include("type.googleapis.com/gitlab.agent.event.GitPushEvent");
  });

  it("ignores messages on the channel that are no GitPushEvent", async () => {
    expect(decodeEvent(Buffer.from("not protobuf at all"))).to.equal(undefined);
    expect(decodeEvent(encodeEvent({ projectId: 1, fullPath: "" }))).to.equal(undefined);
    expect(decodeEvent(encodeEvent({ projectId: 3, fullPath: "g/x" }))).to.deep.equal({ projectId: 3, fullPath: "g/x" });
  });
});
