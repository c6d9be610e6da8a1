// The generated objects' shape: only the fields their kind has, so that the API server's
// server-side apply (which refuses fields not in the schema) takes every one of them.
import { expect } from "chai";
import { desiredObjects } from "./desired-config.js";
import { parseDevfile } from "./devfile.js";
import { VALID_DEVFILE } from "./devfile.test-support.js";

/** The top-level fields each generated kind may have. */
const TOP_LEVEL: Record<string, string[]> = {
  ConfigMap: ["apiVersion", "kind", "metadata", "data"],
  Secret: ["apiVersion", "kind", "metadata", "data"],
  Deployment: ["apiVersion", "kind", "metadata", "spec"],
  Service: ["apiVersion", "kind", "metadata", "spec"],
  PersistentVolumeClaim: ["apiVersion", "kind", "metadata", "spec"],
  NetworkPolicy: ["apiVersion", "kind", "metadata", "spec"],
};

describe("remote development: generated objects", () => {
  it("have only the top-level fields of their kind, names in metadata", () => {
    const objects = desiredObjects({
      workspaceId: 7,
      name: "workspace-1-2-abcdef",
      namespace: "gl-rd-ns-1-2-abcdef",
      agentId: 1,
      dnsZone: "ws.example.dev",
      running: true,
      devfile: parseDevfile(VALID_DEVFILE),
      networkPolicyEnabled: true,
      proxyNamespace: "gitlab-workspaces",
      includeAllResources: true,
      variables: [],
    });
    expect(objects.map((o) => o.kind)).to.include.members(["PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy", "Secret", "ConfigMap"]);
    for (const o of objects) {
      const kind = o.kind as string;
      expect(TOP_LEVEL[kind], kind).to.not.equal(undefined);
      expect(Object.keys(o).every((k) => TOP_LEVEL[kind]!.includes(k)), `${kind}: ${Object.keys(o).join(", ")}`).to.equal(true);
      expect((o.metadata as { name: string }).name).to.be.a("string").and.not.equal("");
    }
    const claims = objects.filter((o) => o.kind === "PersistentVolumeClaim").map((o) => (o.metadata as { name: string }).name);
    expect(claims).to.deep.equal(["workspace-1-2-abcdef-cache", "workspace-1-2-abcdef-gl-workspace-data"]);
  });
});
