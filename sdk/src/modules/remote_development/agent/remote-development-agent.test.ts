// The parts of the remote_development agent module that need no cluster: the platform's answer as
// the agent reads it, config_to_apply grouped by inventory, the configuration's defaults.
// (The loop against a real API server and the platform's endpoint: platform/src/remote-development/
// remote-development-agent.test.ts; end to end with kas and agentk: e2e/workspaces.e2e.test.ts.)
import { expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { RemoteDevelopmentCFSchema } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { parseReconcileResponse } from "./reconcile-messages.js";
import { remoteDevelopmentLoopSettings } from "./remote-development-settings.js";
import { groupByInventory } from "./workspace-config.js";

const inventory = (name: string) => `apiVersion: v1
kind: ConfigMap
metadata:
  name: ${name}
  namespace: ws-ns
  labels:
    cli-utils.sigs.k8s.io/inventory-id: ${name}
`;
const owned = (kind: string, name: string, owner: string, extra = "") => `apiVersion: v1
kind: ${kind}
metadata:
  name: ${name}
  namespace: ws-ns${extra}
  annotations:
    config.k8s.io/owning-inventory: ${owner}
`;

describe("remote_development agent: the platform's answer", () => {
  it("reads GitLab's fields, absent and null strings as empty", () => {
    const infos = parseReconcileResponse(
      JSON.stringify({
        workspace_rails_infos: [
          { name: "ws1", namespace: "ns1", deployment_resource_version: "12", actual_state: "Running", desired_state: "Running", config_to_apply: "---\n" },
          { name: "ws2", namespace: "ns2", deployment_resource_version: null, actual_state: "CreationRequested", desired_state: "Running", config_to_apply: null, extra: 1 },
        ],
      }),
    );
    expect(infos).to.deep.equal([
      { name: "ws1", namespace: "ns1", deployment_resource_version: "12", actual_state: "Running", desired_state: "Running", config_to_apply: "---\n" },
      { name: "ws2", namespace: "ns2", deployment_resource_version: "", actual_state: "CreationRequested", desired_state: "Running", config_to_apply: "" },
    ]);
    expect(parseReconcileResponse("{}")).to.deep.equal([]);
  });

  it("refuses what it cannot act on safely, naming the field", () => {
    const refusals: Array<[string, RegExp]> = [
      ["not json", /not JSON/],
      ["[]", /must be a JSON object/],
      ['{"workspace_rails_infos": {}}', /workspace_rails_infos must be an array/],
      ['{"workspace_rails_infos": [{"namespace": "ns"}]}', /workspace_rails_infos\[0\]\.name is required/],
      ['{"workspace_rails_infos": [{"name": "w", "namespace": "../kube-system"}]}', /workspace_rails_infos\[0\]\.namespace must be a DNS label/],
      ['{"workspace_rails_infos": [{"name": "w", "namespace": "ns", "config_to_apply": 3}]}', /workspace_rails_infos\[0\]\.config_to_apply must be a string/],
    ];
    for (const [text, error] of refusals) expect(() => parseReconcileResponse(text), text).to.throw(error);
  });
});

describe("remote_development agent: config_to_apply by inventory", () => {
  it("groups objects under the inventory their annotation names and puts them in the workspace's namespace", () => {
    const config = ["---", inventory("w-workspace-inventory"), "---", owned("Service", "w", "w-workspace-inventory"), "---", inventory("w-secrets-inventory"), "---", owned("Secret", "w-env", "w-secrets-inventory")].join("\n");
    const groups = groupByInventory(config, "ws-ns");
    expect(groups.map((g) => [g.id, g.objects.map((o) => `${o.kind}/${o.metadata.name}`)])).to.deep.equal([
      ["w-workspace-inventory", ["Service/w"]],
      ["w-secrets-inventory", ["Secret/w-env"]],
    ]);
  });

  it("refuses a config without inventory, an object without owner, and objects outside the namespace", () => {
    expect(() => groupByInventory(owned("Service", "w", "inv"), "ws-ns")).to.throw(/no inventory found/);
    expect(() => groupByInventory([inventory("inv"), "---", "apiVersion: v1\nkind: Service\nmetadata:\n  name: w\n"].join("\n"), "ws-ns")).to.throw(/no owning inventory found: Service w/);
    expect(() => groupByInventory([inventory("inv"), "---", owned("Service", "w", "other")].join("\n"), "ws-ns")).to.throw(/names inventory other, which config_to_apply does not define/);
    expect(() => groupByInventory([inventory("inv"), "---", owned("Service", "w", "inv").replace("namespace: ws-ns", "namespace: kube-system")].join("\n"), "ws-ns")).to.throw(
      /Service w is in namespace kube-system, not the workspace's namespace ws-ns/,
    );
    expect(() => groupByInventory("kind: [", "ws-ns")).to.throw(/invalid YAML/);
  });
});

describe("remote_development agent: configuration", () => {
  it("has GitLab's defaults: disabled, partial sync every 10 s, full sync every hour", () => {
    expect(remoteDevelopmentLoopSettings(undefined)).to.deep.equal({ enabled: false, partialSyncIntervalMs: 10_000, fullSyncIntervalMs: 3_600_000 });
    const config = create(RemoteDevelopmentCFSchema, {
      enabled: true,
      partialSyncInterval: create(DurationSchema, { seconds: 1n, nanos: 500_000_000 }),
      fullSyncInterval: create(DurationSchema, { seconds: 30n }),
    });
    expect(remoteDevelopmentLoopSettings(config)).to.deep.equal({ enabled: true, partialSyncIntervalMs: 1_500, fullSyncIntervalMs: 30_000 });
  });
});
