import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import { AgentConfigurationSchema } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { parseAgentConfigFile } from "../../../agent-config/config-file.js";
import { ManifestsInvalidError, decodeManifests } from "./manifest-decoder.js";
import { DEFAULT_MANIFEST_GLOB, manifestProjects } from "./manifest-project.js";

const file = (source: string, text: string) => ({ source, data: new TextEncoder().encode(text) });

describe("GitOps manifests (decoding, settings)", () => {
  it("decodes YAML documents, JSON and Lists with their file and line; skips empty documents", () => {
    const objects = decodeManifests([
      file("a.yaml", "# comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: two}\n"),
      file("b.json", '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "three"}}'),
    ]);
    expect(objects.map((o) => `${o.source}:${o.line} ${o.object.kind}/${o.object.metadata.name}`)).to.deep.equal([
      "a.yaml:3 ConfigMap/one",
      "a.yaml:12 Secret/two",
      "b.json:1 Namespace/three",
    ]);
  });

  it("reports every problem of every file with file and line, and decodes nothing then", () => {
    let error: ManifestsInvalidError | undefined;
    try {
      decodeManifests([
        file("ok.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n"),
        file("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a: b\n"),
        file("missing.yaml", "apiVersion: v1\nmetadata:\n  generateName: x-\n---\n- a list\n"),
        { source: "bin.yaml", data: new Uint8Array([0xff, 0xfe]) },
      ]);
    } catch (err) {
      error = err as ManifestsInvalidError;
    }
    expect(error).to.be.instanceOf(ManifestsInvalidError);
    expect(error!.problems.map((p) => p.message)).to.deep.equal([
      "bad.yaml:4: invalid YAML: Nested mappings are not allowed in compact mappings",
      "missing.yaml:1: object is missing kind, metadata.name (generateName is not supported: objects must have stable names)",
      "missing.yaml:5: a manifest document must be a mapping (an object)",
      "bin.yaml: is not valid UTF-8",
    ]);
  });

  it("applies GitLab's defaults to manifest projects", () => {
    const file = parseAgentConfigFile("gitops:\n  manifest_projects:\n  - {}\n  - id: g/app\n    ref: {tag: v1}\n    default_namespace: app\n    prune: false\n    reconcile_timeout: 90s\n    paths: [{glob: 'deploy/*.yaml'}]\n");
    const config = create(AgentConfigurationSchema, { gitops: file.gitops, projectPath: "g/config" });
    const [defaults, custom] = manifestProjects(config);
    expect(defaults).to.deep.equal({
      project: "g/config",
      ref: { case: undefined },
      paths: [{ case: "glob", value: DEFAULT_MANIFEST_GLOB }],
      defaultNamespace: "default",
      prune: true,
      pruneTimeoutMs: 3_600_000,
      prunePropagationPolicy: "foreground",
      reconcileTimeoutMs: 3_600_000,
      inventoryPolicy: "must_match",
      dryRunStrategy: "none",
    });
    expect(custom).to.deep.include({ project: "g/app", ref: { case: "tag", value: "v1" }, defaultNamespace: "app", prune: false, reconcileTimeoutMs: 90_000 });
    expect(custom!.paths).to.deep.equal([{ case: "glob", value: "deploy/*.yaml" }]);
  });
});
