/**
 * Wire compatibility of the GitLab v16 feature channels (proto/gitlab/agent/**): each message is
 * encoded with the generated code and compared with bytes assembled by hand from GitLab's field
 * numbers and types, then the hand bytes are decoded back. A wrong field number, wire type, oneof
 * or name in our .proto files fails here.
 *
 * Reading the bytes: a tag is (field number << 3) | wire type, wire type 0 = varint, 2 = length
 * delimited (followed by the length). So field 1 LEN = 0x0a, 2 LEN = 0x12, 3 LEN = 0x1a, 4 LEN =
 * 0x22, 5 LEN = 0x2a, 6 LEN = 0x32, 8 LEN = 0x42; field 1 varint = 0x08, 2 = 0x10, 3 = 0x18, 4 = 0x20,
 * 5 = 0x28.
 */
import { describe, it } from "mocha";
import { expect } from "chai";
import { create, equals, fromBinary, toBinary, toJson, type DescMessage, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { GatewayKasResponseSchema, StartStreamingSchema } from "../gen/gitlab/agent/kas/kasapp_pb.js";
import { GitPushEventSchema } from "../gen/gitlab/agent/event/event_pb.js";
import { GitPushEventRequestSchema, GitPushEventResponseSchema, Notifications } from "../gen/gitlab/agent/notifications/rpc/rpc_pb.js";
import { GitLabFlux, ReconcileProjectsRequestSchema, ReconcileProjectsResponseSchema } from "../gen/gitlab/agent/flux/rpc/rpc_pb.js";
import { Gitops, ObjectsToSynchronizeRequestSchema, ObjectsToSynchronizeResponseSchema } from "../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import { ConnectedAgentInfoSchema } from "../gen/gitlab/agent/agent_tracker/agent_tracker_pb.js";
import { AgentTracker, GetConnectedAgentsRequestSchema, GetConnectedAgentsResponseSchema } from "../gen/gitlab/agent/agent_tracker/rpc/rpc_pb.js";
import {
  ConfigurationProject,
  ListAgentConfigFilesRequestSchema,
  ListAgentConfigFilesResponseSchema,
} from "../gen/gitlab/agent/configuration_project/rpc/rpc_pb.js";
import { ExpiringValueSchema, ExpiringValueTimestampSchema } from "../gen/gitlab/agent/redistool/redistool_pb.js";
import { GitlabAccess, HeaderExtraSchema } from "../gen/gitlab/agent/gitlab_access/rpc/rpc_pb.js";
import { HttpRequestSchema } from "../gen/gitlab/agent/grpctool/grpctool_pb.js";

/** Asserts that `init` encodes to exactly `wire`, and that `wire` decodes to the same message with nothing unknown. */
function expectWire<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>, wire: number[]): void {
  const msg = create(schema, init);
  // Hex strings give a readable diff when a byte is wrong.
  expect(Buffer.from(toBinary(schema, msg)).toString("hex")).to.equal(Buffer.from(wire).toString("hex"));
  const decoded = fromBinary(schema, new Uint8Array(wire));
  expect(decoded.$unknown ?? [], "fields our proto does not know").to.deep.equal([]);
  expect(equals(schema, decoded, msg), "decoded hand-assembled bytes").to.equal(true);
}

/** The gRPC paths a service answers on, with their kinds, e.g. "/pkg.Svc/M bidi_streaming". */
function methodPaths(service: DescService): string[] {
  return service.methods.map((m) => `/${service.typeName}/${m.name} ${m.methodKind} ${m.input.typeName} ${m.output.typeName}`);
}

const ascii = (s: string) => [...Buffer.from(s, "ascii")];

describe("GitLab v16 wire compatibility of the feature channels", () => {
  it("serves GitLab's method paths, kinds and message types", () => {
    expect([GitlabAccess, GitLabFlux, Gitops, Notifications, AgentTracker, ConfigurationProject].flatMap(methodPaths)).to.deep.equal([
      "/gitlab.agent.gitlab_access.rpc.GitlabAccess/MakeRequest bidi_streaming gitlab.agent.grpctool.HttpRequest gitlab.agent.grpctool.HttpResponse",
      "/gitlab.agent.flux.rpc.GitLabFlux/ReconcileProjects server_streaming gitlab.agent.flux.rpc.ReconcileProjectsRequest gitlab.agent.flux.rpc.ReconcileProjectsResponse",
      "/gitlab.agent.gitops.rpc.Gitops/GetObjectsToSynchronize server_streaming gitlab.agent.gitops.rpc.ObjectsToSynchronizeRequest gitlab.agent.gitops.rpc.ObjectsToSynchronizeResponse",
      "/gitlab.agent.notifications.rpc.Notifications/GitPushEvent unary gitlab.agent.notifications.rpc.GitPushEventRequest gitlab.agent.notifications.rpc.GitPushEventResponse",
      "/gitlab.agent.agent_tracker.rpc.AgentTracker/GetConnectedAgents unary gitlab.agent.agent_tracker.rpc.GetConnectedAgentsRequest gitlab.agent.agent_tracker.rpc.GetConnectedAgentsResponse",
      "/gitlab.agent.configuration_project.rpc.ConfigurationProject/ListAgentConfigFiles unary gitlab.agent.configuration_project.rpc.ListAgentConfigFilesRequest gitlab.agent.configuration_project.rpc.ListAgentConfigFilesResponse",
    ]);
  });

  describe("gitlab.agent.kas (KAS-to-KAS routing)", () => {
    it("GatewayKasResponse.tunnel_ready = 1 and no_tunnel = 6", () => {
      expectWire(GatewayKasResponseSchema, { msg: { case: "tunnelReady", value: {} } }, [0x0a, 0x00]);
      expectWire(GatewayKasResponseSchema, { msg: { case: "noTunnel", value: {} } }, [0x32, 0x00]);
    });

    it("GatewayKasResponse.header = 2 with meta map<string, Values> = 1", () => {
      // Values { value = 1: "v" }
      const values = [0x0a, 0x01, ...ascii("v")];
      // map entry { key = 1: "k", value = 2: Values }
      const entry = [0x0a, 0x01, ...ascii("k"), 0x12, values.length, ...values];
      const header = [0x0a, entry.length, ...entry];
      expectWire(GatewayKasResponseSchema, { msg: { case: "header", value: { meta: { k: { value: ["v"] } } } } }, [0x12, header.length, ...header]);
    });

    it("GatewayKasResponse.message = 3 { data = 1 }, trailer = 4, error = 5 { google.rpc.Status status = 1 }", () => {
      expectWire(GatewayKasResponseSchema, { msg: { case: "message", value: { data: new Uint8Array([1, 2, 3]) } } }, [0x1a, 0x05, 0x0a, 0x03, 1, 2, 3]);
      expectWire(GatewayKasResponseSchema, { msg: { case: "trailer", value: {} } }, [0x22, 0x00]);
      // Status { code = 1: 14 (UNAVAILABLE), message = 2: "x" }
      const status = [0x08, 14, 0x12, 0x01, ...ascii("x")];
      expectWire(
        GatewayKasResponseSchema,
        { msg: { case: "error", value: { status: { code: 14, message: "x" } } } },
        [0x2a, status.length + 2, 0x0a, status.length, ...status],
      );
    });

    it("StartStreaming is an empty message", () => {
      expect(StartStreamingSchema.typeName).to.equal("gitlab.agent.kas.StartStreaming");
      expectWire(StartStreamingSchema, {}, []);
    });
  });

  describe("gitlab.agent.event and notifications", () => {
    // Project { id = 1: 42, full_path = 2: "g/p" }
    const project = [0x08, 42, 0x12, 0x03, ...ascii("g/p")];
    const event = [0x0a, project.length, ...project];

    it("GitPushEvent { Project project = 1 { int64 id = 1; string full_path = 2 } }", () => {
      expectWire(GitPushEventSchema, { project: { id: 42n, fullPath: "g/p" } }, event);
    });

    it("GitPushEventRequest { event = 1 } and an empty response", () => {
      expectWire(GitPushEventRequestSchema, { event: { project: { id: 42n, fullPath: "g/p" } } }, [0x0a, event.length, ...event]);
      expectWire(GitPushEventResponseSchema, {}, []);
    });

    it("packs GitPushEvent into Any with GitLab's type URL (as published on kas_events)", () => {
      const any = anyPack(GitPushEventSchema, create(GitPushEventSchema, { project: { id: 42n, fullPath: "g/p" } }));
      expect(any.typeUrl).to.equal("type.googleapis.com/gitlab.agent.event.GitPushEvent");
      expect([...any.value]).to.deep.equal(event);
    });
  });

  describe("gitlab.agent.flux.rpc", () => {
    it("ReconcileProjectsRequest { repeated Project project = 1 { string id = 1 } }", () => {
      expectWire(ReconcileProjectsRequestSchema, { project: [{ id: "a" }, { id: "b/c" }] }, [
        0x0a, 0x03, 0x0a, 0x01, ...ascii("a"),
        0x0a, 0x05, 0x0a, 0x03, ...ascii("b/c"),
      ]);
    });

    it("ReconcileProjectsResponse { Project project = 1 }", () => {
      expectWire(ReconcileProjectsResponseSchema, { project: { id: "g/p" } }, [0x0a, 0x05, 0x0a, 0x03, ...ascii("g/p")]);
    });
  });

  describe("gitlab.agent.gitops.rpc", () => {
    it("ObjectsToSynchronizeRequest { project_id = 1; commit_id = 2; repeated PathCF paths = 3; GitRefCF ref = 4 }", () => {
      expectWire(
        ObjectsToSynchronizeRequestSchema,
        {
          projectId: "g/p",
          commitId: "c",
          paths: [{ path: { case: "glob", value: "*" } }, { path: { case: "file", value: "f" } }],
          ref: { ref: { case: "branch", value: "main" } },
        },
        [
          0x0a, 0x03, ...ascii("g/p"),
          0x12, 0x01, ...ascii("c"),
          0x1a, 0x03, 0x0a, 0x01, ...ascii("*"), // PathCF.glob = 1
          0x1a, 0x03, 0x12, 0x01, ...ascii("f"), // PathCF.file = 2
          0x22, 0x06, 0x12, 0x04, ...ascii("main"), // GitRefCF.branch = 2
        ],
      );
      expectWire(ObjectsToSynchronizeRequestSchema, { ref: { ref: { case: "tag", value: "v1" } } }, [0x22, 0x04, 0x0a, 0x02, ...ascii("v1")]);
      expectWire(ObjectsToSynchronizeRequestSchema, { ref: { ref: { case: "commit", value: "ab" } } }, [0x22, 0x04, 0x1a, 0x02, ...ascii("ab")]);
    });

    it("ObjectsToSynchronizeResponse oneof message: header = 1, object = 2, trailer = 3", () => {
      // Header { commit_id = 1: "c", int64 project_id = 2: 5 }
      expectWire(ObjectsToSynchronizeResponseSchema, { message: { case: "header", value: { commitId: "c", projectId: 5n } } }, [
        0x0a, 0x05, 0x0a, 0x01, ...ascii("c"), 0x10, 0x05,
      ]);
      // Object { source = 1: "a", bytes data = 2: [1] }
      expectWire(ObjectsToSynchronizeResponseSchema, { message: { case: "object", value: { source: "a", data: new Uint8Array([1]) } } }, [
        0x12, 0x06, 0x0a, 0x01, ...ascii("a"), 0x12, 0x01, 0x01,
      ]);
      expectWire(ObjectsToSynchronizeResponseSchema, { message: { case: "trailer", value: {} } }, [0x1a, 0x00]);
    });
  });

  describe("gitlab.agent.agent_tracker", () => {
    // connection_id is agentk's random int63 pod id: 2^62 needs all nine varint bytes of an int64.
    const connectionId = 1n << 62n;
    const connectionIdVarint = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    const info = [
      0x0a, 0x03, 0x0a, 0x01, ...ascii("v"), // agent_meta = 1 { version = 1 }
      0x12, 0x04, 0x08, 0x01, 0x10, 0x02, // connected_at = 2 { seconds = 1, nanos = 2 }
      0x18, ...connectionIdVarint, // connection_id = 3
      0x20, 0x04, // agent_id = 4
      0x28, 0x05, // project_id = 5
    ];
    const infoInit = { agentMeta: { version: "v" }, connectedAt: { seconds: 1n, nanos: 2 }, connectionId, agentId: 4n, projectId: 5n };

    it("ConnectedAgentInfo { agent_meta = 1; connected_at = 2; connection_id = 3; agent_id = 4; project_id = 5 }", () => {
      expectWire(ConnectedAgentInfoSchema, infoInit, info);
    });

    it("GetConnectedAgentsRequest oneof request: project_id = 1, agent_id = 2; response agents = 1", () => {
      expectWire(GetConnectedAgentsRequestSchema, { request: { case: "projectId", value: 9n } }, [0x08, 0x09]);
      expectWire(GetConnectedAgentsRequestSchema, { request: { case: "agentId", value: 7n } }, [0x10, 0x07]);
      expectWire(GetConnectedAgentsResponseSchema, { agents: [infoInit] }, [0x0a, info.length, ...info]);
    });

    it("keeps GitLab's snake_case JSON names", () => {
      const json = toJson(ConnectedAgentInfoSchema, create(ConnectedAgentInfoSchema, infoInit));
      expect(Object.keys(json as object)).to.deep.equal(["agent_meta", "connected_at", "connection_id", "agent_id", "project_id"]);
    });
  });

  describe("gitlab.agent.configuration_project.rpc", () => {
    it("ListAgentConfigFilesRequest { GitalyRepository repository = 1; GitalyInfo gitaly_info = 2; default_branch = 3 }", () => {
      // GitalyRepository { storage_name = 2: "s", gl_project_path = 8: "g/p" }
      const repository = [0x12, 0x01, ...ascii("s"), 0x42, 0x03, ...ascii("g/p")];
      expectWire(
        ListAgentConfigFilesRequestSchema,
        { repository: { storageName: "s", glProjectPath: "g/p" }, gitalyInfo: { address: "a" }, defaultBranch: "main" },
        [0x0a, repository.length, ...repository, 0x12, 0x03, 0x0a, 0x01, ...ascii("a"), 0x1a, 0x04, ...ascii("main")],
      );
    });

    it("ListAgentConfigFilesResponse { repeated AgentConfigFile config_files = 1 { name = 1; agent_name = 2 } }", () => {
      const init = { configFiles: [{ name: "n", agentName: "a" }] };
      expectWire(ListAgentConfigFilesResponseSchema, init, [0x0a, 0x06, 0x0a, 0x01, ...ascii("n"), 0x12, 0x01, ...ascii("a")]);
      expect(toJson(ListAgentConfigFilesResponseSchema, create(ListAgentConfigFilesResponseSchema, init))).to.deep.equal({
        config_files: [{ name: "n", agent_name: "a" }],
      });
    });
  });

  describe("gitlab.agent.redistool", () => {
    // expires_at = 300: varint 0xac 0x02 (300 = 0b10_0101100)
    const value = [0x08, 0xac, 0x02, 0x12, 0x01, 0xff];

    it("ExpiringValue { int64 expires_at = 1; bytes value = 2 }", () => {
      expectWire(ExpiringValueSchema, { expiresAt: 300n, value: new Uint8Array([0xff]) }, value);
    });

    it("ExpiringValueTimestamp reads expires_at from an ExpiringValue's bytes", () => {
      expect(fromBinary(ExpiringValueTimestampSchema, new Uint8Array(value)).expiresAt).to.equal(300n);
      expectWire(ExpiringValueTimestampSchema, { expiresAt: 300n }, [0x08, 0xac, 0x02]);
    });
  });

  describe("gitlab.agent.gitlab_access.rpc", () => {
    it("HeaderExtra { module_name = 1 }, carried in grpctool.HttpRequest.Header.extra as Any", () => {
      const extra = [0x0a, 0x04, ...ascii("flux")];
      expectWire(HeaderExtraSchema, { moduleName: "flux" }, extra);
      const any = anyPack(HeaderExtraSchema, create(HeaderExtraSchema, { moduleName: "flux" }));
      const typeUrl = ascii("type.googleapis.com/gitlab.agent.gitlab_access.rpc.HeaderExtra");
      // Any { type_url = 1; value = 2 }
      const anyWire = [0x0a, typeUrl.length, ...typeUrl, 0x12, extra.length, ...extra];
      // HttpRequest { header = 1 { extra = 2 } }
      const header = [0x12, anyWire.length, ...anyWire];
      expectWire(HttpRequestSchema, { message: { case: "header", value: { extra: any } } }, [0x0a, header.length, ...header]);
    });
  });
});
