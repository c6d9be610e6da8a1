import { expect } from "chai";
import { parse, parseAllDocuments } from "yaml";
import { DevfileError, parseDevfile } from "./devfile.js";
import { VALID_DEVFILE } from "./devfile.test-support.js";
import { desiredConfigYaml, desiredObjects, type DesiredConfigInput } from "./desired-config.js";
import { DEFAULT_WORKSPACE_TOOL_IMAGES, checkToolsFit, withWorkspaceTools } from "./workspace-tools.js";

type Obj = { kind: string; metadata: { name: string; namespace: string; labels: Record<string, string>; annotations?: Record<string, string> } } & Record<string, unknown>;

function input(overrides: Partial<DesiredConfigInput> = {}): DesiredConfigInput {
  return {
    workspaceId: 7,
    name: "workspace-3-2-abc123",
    namespace: "gl-rd-ns-3-2-abc123",
    agentId: 3,
    dnsZone: "ws.example.dev",
    running: true,
    devfile: parseDevfile(VALID_DEVFILE),
    networkPolicyEnabled: true,
    proxyNamespace: "gitlab-workspaces",
    includeAllResources: true,
    variables: [
      { key: "TOKEN", value: "s3cret", type: "env_var" },
      { key: "config.json", value: "{}", type: "file" },
    ],
    ...overrides,
  };
}

describe("remote development: devfiles", () => {
  it("reads a devfile GitLab accepts, with the devfile defaults", () => {
    const devfile = parseDevfile(VALID_DEVFILE);
    expect(devfile.containers).to.have.length(1);
    const [c] = devfile.containers;
    expect(c).to.deep.include({ name: "tooling", injectEditor: true, mountSources: true, sourceMapping: "/projects", memoryLimit: "2Gi" });
    expect(c!.endpoints.map((e) => [e.name, e.targetPort, e.exposure, e.protocol])).to.deep.equal([
      ["http-3000", 3000, "public", "http"],
      ["debug", 9229, "internal", "http"],
    ]);
    expect(c!.volumeMounts).to.deep.equal([{ name: "cache", path: "/cache" }]);
    expect(devfile.volumes).to.deep.equal([{ name: "cache", size: "2Gi" }]);
  });

  const editor = "  - name: tooling\n    attributes:\n      gl/inject-editor: true\n    container:\n      image: img\n";
  const refused: Array<[string, string, string]> = [
    ["not YAML", "schemaVersion: [", "Devfile is not valid YAML"],
    ["no schemaVersion", "components: []\n", "'schemaVersion' is missing"],
    ["an older schema", "schemaVersion: 2.1.0\n", "'schemaVersion' 2.1.0 is not supported, use 2.2.x"],
    ["a parent", `schemaVersion: 2.2.0\nparent:\n  id: x\ncomponents:\n${editor}`, "Inheriting from 'parent' is not yet supported"],
    ["projects", `schemaVersion: 2.2.0\nprojects: []\ncomponents:\n${editor}`, "'projects' is not yet supported"],
    ["no components", "schemaVersion: 2.2.0\n", "No components present in devfile"],
    ["no editor", "schemaVersion: 2.2.0\ncomponents:\n  - name: a\n    container:\n      image: img\n", "No component has 'gl/inject-editor' attribute"],
    ["a reserved name", "schemaVersion: 2.2.0\ncomponents:\n  - name: gl-tooling\n    container:\n      image: img\n", "Component name 'gl-tooling' must not start with 'gl-'"],
    ["a kubernetes component", `schemaVersion: 2.2.0\ncomponents:\n${editor}  - name: k\n    kubernetes:\n      uri: x.yaml\n`, "Component type 'kubernetes' is not yet supported"],
    ["postStart events", `schemaVersion: 2.2.0\nevents:\n  postStart: [a]\ncomponents:\n${editor}`, "Event type 'postStart' is not yet supported"],
    ["dedicatedPod", "schemaVersion: 2.2.0\ncomponents:\n  - name: a\n    container:\n      image: img\n      dedicatedPod: true\n", "'dedicatedPod' is not yet supported"],
    ["an unknown volume", `schemaVersion: 2.2.0\ncomponents:\n${editor}      volumeMounts: [{name: nope}]\n`, "mounts volume 'nope', which no volume component defines"],
    ["a bad port", `schemaVersion: 2.2.0\ncomponents:\n${editor}      endpoints: [{name: web, targetPort: 70000}]\n`, "targetPort must be a port number"],
    ["a container without image", "schemaVersion: 2.2.0\ncomponents:\n  - name: a\n    container: {}\n", "'container.image' is required"],
    ["an unknown preStart command", `schemaVersion: 2.2.0\nevents:\n  preStart: [nope]\ncomponents:\n${editor}`, "events.preStart names command 'nope', which is not defined"],
    [
      "an exec command at preStart",
      `schemaVersion: 2.2.0\ncommands:\n  - id: build\n    exec: {component: tooling, commandLine: make}\nevents:\n  preStart: [build]\ncomponents:\n${editor}`,
      "Command 'build' of events.preStart must be an 'apply' command",
    ],
    [
      "the editor at preStart",
      `schemaVersion: 2.2.0\ncommands:\n  - id: init\n    apply: {component: tooling}\nevents:\n  preStart: [init]\ncomponents:\n${editor}`,
      "Component 'tooling' with 'gl/inject-editor' cannot run at preStart",
    ],
  ];
  for (const [what, text, message] of refused) {
    it(`refuses ${what} with a clear error`, () => {
      expect(() => parseDevfile(text)).to.throw(DevfileError, message);
    });
  }

  it("runs the components that events.preStart applies as init containers, in order, before GitLab's tools", () => {
    const text = `schemaVersion: 2.2.0
commands:
  - id: migrate
    apply: {component: migrate}
events:
  preStart: [migrate]
components:
${editor}  - name: migrate
    container:
      image: migrator:1
`;
    const devfile = parseDevfile(text);
    expect(devfile.preStart).to.deep.equal(["migrate"]);
    const withTools = withWorkspaceTools(devfile, { path: "app", repositoryUrl: "https://git.example/g/app.git", ref: "main" }, DEFAULT_WORKSPACE_TOOL_IMAGES);
    const pod = (desiredObjects(input({ devfile: withTools })).find((o) => (o as Obj).kind === "Deployment") as { spec: { template: { spec: { initContainers: Array<{ name: string; image: string }>; containers: Array<{ name: string }> } } } }).spec.template.spec;
    expect(pod.initContainers.map((c) => `${c.name} ${c.image}`)).to.deep.equal([
      "migrate migrator:1",
      `gl-editor-injector ${DEFAULT_WORKSPACE_TOOL_IMAGES.editorInjector}`,
      `gl-cloner-injector ${DEFAULT_WORKSPACE_TOOL_IMAGES.projectCloner}`,
    ]);
    expect(pod.containers.map((c) => c.name)).to.deep.equal(["tooling"]);
  });

  it("refuses devfiles that take the editor's ports or endpoint names", () => {
    expect(() => checkToolsFit(parseDevfile(`schemaVersion: 2.2.0\ncomponents:\n${editor}      endpoints: [{name: mine, targetPort: 60001}]\n`))).to.throw(DevfileError, "Endpoint port 60001 is reserved for the editor");
    expect(() => checkToolsFit(parseDevfile(`schemaVersion: 2.2.0\ncomponents:\n${editor}      endpoints: [{name: editor-server, targetPort: 8080}]\n`))).to.throw(DevfileError, "Endpoint name 'editor-server' is reserved");
  });
});

describe("remote development: the objects generated for a workspace", () => {
  it("emits the inventory, Deployment, Service, PVCs, NetworkPolicy, then the Secrets and their inventory", () => {
    const objects = desiredObjects(input()) as Obj[];
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).to.deep.equal([
      "ConfigMap/workspace-3-2-abc123-workspace-inventory",
      "Deployment/workspace-3-2-abc123",
      "Service/workspace-3-2-abc123",
      "PersistentVolumeClaim/workspace-3-2-abc123-cache",
      "PersistentVolumeClaim/workspace-3-2-abc123-gl-workspace-data",
      "NetworkPolicy/workspace-3-2-abc123",
      "ConfigMap/workspace-3-2-abc123-secrets-inventory",
      "Secret/workspace-3-2-abc123-env-var",
      "Secret/workspace-3-2-abc123-file",
    ]);
    // Only Kubernetes fields: kubectl's and the API server's strict validation refuse anything else.
    for (const o of objects) expect(Object.keys(o).filter((k) => !["apiVersion", "kind", "metadata", "spec", "data"].includes(k)), `${o.kind}/${o.metadata.name}`).to.deep.equal([]);
    for (const o of objects) {
      expect(o.metadata.namespace).to.equal("gl-rd-ns-3-2-abc123");
      expect(o.metadata.labels["agent.gitlab.com/id"]).to.equal("3");
    }
    expect(objects[0]!.metadata.labels["cli-utils.sigs.k8s.io/inventory-id"]).to.equal("workspace-3-2-abc123-workspace-inventory");
    expect(objects[1]!.metadata.annotations).to.deep.equal({
      "config.k8s.io/owning-inventory": "workspace-3-2-abc123-workspace-inventory",
      "workspaces.gitlab.com/host-template": "{{.port}}-workspace-3-2-abc123.ws.example.dev",
      "workspaces.gitlab.com/id": "7",
    });
    expect(objects[7]!.metadata.annotations!["config.k8s.io/owning-inventory"]).to.equal("workspace-3-2-abc123-secrets-inventory");
    expect(objects[7]!.data).to.deep.equal({ TOKEN: Buffer.from("s3cret").toString("base64") });
    expect(objects[8]!.data).to.deep.equal({ "config.json": Buffer.from("{}").toString("base64") });

    const deployment = objects[1] as Obj & { spec: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(deployment.spec.replicas).to.equal(1);
    const pod = deployment.spec.template.spec;
    expect(pod.securityContext).to.deep.equal({ runAsNonRoot: true, runAsUser: 5001, fsGroup: 0, fsGroupChangePolicy: "OnRootMismatch" });
    const [container] = pod.containers;
    expect(container.securityContext).to.deep.equal({ allowPrivilegeEscalation: false, privileged: false, runAsUser: 5001 });
    expect(container.resources).to.deep.equal({ limits: { cpu: "1", memory: "2Gi" }, requests: { cpu: "100m", memory: "128Mi" } });
    expect(container.envFrom).to.deep.equal([{ secretRef: { name: "workspace-3-2-abc123-env-var" } }]);
    expect(container.command).to.deep.equal(["sleep"]);
    expect(pod.volumes.map((v: { name: string }) => v.name)).to.deep.equal(["cache", "gl-workspace-data", "gl-workspace-variables"]);
    const service = objects[2] as Obj & { spec: { ports: unknown[] } };
    expect(service.spec.ports).to.deep.equal([
      { name: "http-3000", port: 3000, targetPort: 3000, protocol: "TCP" },
      { name: "debug", port: 9229, targetPort: 9229, protocol: "TCP" },
    ]);
  });

  it("stops with 0 replicas, leaves out the NetworkPolicy when disabled and the Secrets on partial syncs", () => {
    const objects = desiredObjects(input({ running: false, networkPolicyEnabled: false, includeAllResources: false })) as Array<Obj & { spec?: { replicas?: number } }>;
    expect(objects.map((o) => o.kind)).to.deep.equal(["ConfigMap", "Deployment", "Service", "PersistentVolumeClaim", "PersistentVolumeClaim"]);
    expect(objects[1]!.spec!.replicas).to.equal(0);
  });

  it("writes config_to_apply as multi-document YAML that parses back to the objects", () => {
    const yaml = desiredConfigYaml(input());
    const docs = parseAllDocuments(yaml).map((d) => d.toJS() as unknown);
    expect(docs).to.deep.equal(desiredObjects(input()));
    expect(parse(yaml.split("---\n")[1]!)).to.have.property("kind", "ConfigMap");
  });
});
