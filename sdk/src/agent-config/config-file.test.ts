import { describe, it } from "mocha";
import { expect } from "chai";
import { toJson } from "@bufbuild/protobuf";
import { ConfigurationFileSchema, log_level_enum } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { AgentConfigError, checkAgentConfigFile, formatAgentConfigProblem, parseAgentConfigFile } from "./config-file.js";

/** The problems of a config that must be rejected, formatted `path: message (line N)`. */
function problems(yaml: string | Uint8Array, maxBytes?: number): string[] {
  const result = checkAgentConfigFile(yaml, { maxBytes });
  if (result.ok) throw new Error(`expected problems, config was accepted: ${JSON.stringify(toJson(ConfigurationFileSchema, result.config))}`);
  return result.problems.map(formatAgentConfigProblem);
}

function accepted(yaml: string) {
  const result = checkAgentConfigFile(yaml);
  if (!result.ok) throw new Error(`expected acceptance, got: ${result.problems.map(formatAgentConfigProblem).join("; ")}`);
  return toJson(ConfigurationFileSchema, result.config);
}

describe("platform/agent-config: config.yaml parsing and validation", () => {
  it("accepts every section of the schema and reads it as proto JSON", () => {
    const yaml = `
gitops:
  manifest_projects:
  - id: group/manifests
    default_namespace: apps
    paths:
    - glob: '/manifests/**/*.yaml'
    reconcile_timeout: 3600s
    dry_run_strategy: server
    prune: true
    prune_timeout: "0.5s"
    prune_propagation_policy: foreground
    inventory_policy: adopt_if_no_inventory
    ref:
      branch: production
flux:
  webhook_receiver_url: http://receiver.flux-system.svc/hook/123
observability:
  logging:
    level: debug
    grpc_level: warn
ci_access:
  projects:
  - id: group/app
    default_namespace: app
    environments: [production, review/*]
    access_as:
      ci_job: {}
  groups:
  - id: group/sub
    access_as:
      impersonate:
        username: deployer
        groups: [deployers]
        uid: "42"
        extra:
        - key: team
          val: [a, b]
user_access:
  access_as:
    agent: {}
  projects:
  - id: group/app
  groups:
  - id: group
container_scanning:
  cadence: '0 2 * * *'
  vulnerability_report:
    namespaces: [default]
    filters:
    - namespaces: [kube-system]
      kinds: [Deployment]
  resource_requirements:
    limits: {cpu: 500m, memory: 500Mi}
remote_development:
  enabled: true
  dns_zone: workspaces.example.dev
  partial_sync_interval: 10s
  full_sync_interval: 3600s
  gitlab_workspaces_proxy:
    namespace: gitlab-workspaces
  network_policy:
    enabled: false
`;
    const config = parseAgentConfigFile(yaml);
    expect(config.ciAccess?.projects[0]?.accessAs?.as.case).to.equal("ciJob");
    expect(config.ciAccess?.groups[0]?.accessAs?.as.case).to.equal("impersonate");
    expect(config.observability?.logging?.level).to.equal(log_level_enum.debug);
    expect(config.gitops?.manifestProjects[0]?.reconcileTimeout?.seconds).to.equal(3600n);
    expect(config.gitops?.manifestProjects[0]?.pruneOneof).to.deep.equal({ case: "prune", value: true });
    expect(toJson(ConfigurationFileSchema, config)).to.deep.include({
      flux: { webhook_receiver_url: "http://receiver.flux-system.svc/hook/123" },
      user_access: { access_as: { agent: {} }, projects: [{ id: "group/app" }], groups: [{ id: "group" }] },
    });
    expect(accepted(yaml)).to.have.keys(
      "gitops",
      "flux",
      "observability",
      "ci_access",
      "user_access",
      "container_scanning",
      "remote_development",
    );
  });

  it("reads an empty file, comments only, `null` and `{}` as the empty configuration", () => {
    for (const yaml of ["", "\n\n", "# nothing here\n", "---\n", "null\n", "~", "{}", "\uFEFF"]) {
      expect(accepted(yaml), JSON.stringify(yaml)).to.deep.equal({});
    }
    expect(accepted(new TextDecoder().decode(new Uint8Array([])))).to.deep.equal({});
    // A section set to null is "not set", as with protojson.
    expect(accepted("ci_access:\nuser_access: ~\n")).to.deep.equal({});
  });

  it("follows YAML 1.1 as GitLab (yes/no booleans, << merges) and protojson (enum numbers, durations)", () => {
    expect(
      accepted(`
gitops:
  manifest_projects:
  - id: a/b
    prune: yes
    reconcile_timeout: 1.5s
    prune_timeout: -2s
observability:
  logging: {level: 3}
`),
    ).to.deep.equal({
      gitops: { manifest_projects: [{ id: "a/b", prune: true, reconcile_timeout: "1.500s", prune_timeout: "-2s" }] },
      observability: { logging: { level: "error" } },
    });
    expect(
      accepted(`
ci_access:
  projects:
  - &base
    id: g/one
    default_namespace: shared
    access_as: {ci_job: {}}
  - <<: *base
    id: g/two
  - *base
`),
    ).to.deep.equal({
      ci_access: {
        projects: [
          { id: "g/one", default_namespace: "shared", access_as: { ci_job: {} } },
          { id: "g/two", default_namespace: "shared", access_as: { ci_job: {} } },
          { id: "g/one", default_namespace: "shared", access_as: { ci_job: {} } },
        ],
      },
    });
  });

  // Each case: the file, and every problem it must report (key path, message, line).
  const bad: [string, string, string[]][] = [
    [
      "misspelled key",
      `ci_access:
  projects:
  - id: group/project
    default_namespace: ns
    access_as:
      agent: {}
  - id: group/other
    acces_as:
      agent: {}
`,
      ["ci_access.projects[1].acces_as: unknown key (line 8)"],
    ],
    ["unknown top-level key", "gitops: {}\nagent_k: {}\n", ["agent_k: unknown key (line 2)"]],
    [
      "a manifest glob kasbridge cannot match, and a manifest project listed twice",
      "gitops:\n  manifest_projects:\n  - id: a/b\n    paths:\n    - glob: 'deploy/[a'\n  - id: a/b\n",
      ['gitops.manifest_projects[0].paths[0].glob: glob "deploy/[a" has an unclosed [ (line 5)', "gitops.manifest_projects[1]: duplicate manifest project a/b (line 6)"],
    ],
    ["reserved field by number", "charts: []\n", ["charts: unknown key (line 1)"]],
    ["top level is a list", "- ci_access\n", ["config: must be a mapping of top-level keys (gitops, ci_access, ...) (line 1)"]],
    ["top level is a string", "hello\n", ["config: must be a mapping of top-level keys (gitops, ci_access, ...) (line 1)"]],
    ["section is a string", "ci_access: yes please\n", ['ci_access: must be a mapping, got "yes please" (line 1)']],
    ["list is a mapping", "ci_access:\n  projects:\n    id: a/b\n", ["ci_access.projects: must be a list, got a mapping (line 3)"]],
    ["id is a number", "ci_access:\n  projects:\n  - id: 123\n", ["ci_access.projects[0].id: must be a string, got 123 (line 3)"]],
    ["missing id", "ci_access:\n  groups:\n  - default_namespace: x\n", ["ci_access.groups[0].id: is required (line 3)"]],
    ["empty id", "ci_access:\n  projects:\n  - id: ''\n", ["ci_access.projects[0].id: must not be empty (line 3)"]],
    [
      "two access_as",
      "ci_access:\n  projects:\n  - id: a/b\n    access_as:\n      agent: {}\n      ci_job: {}\n",
      ["ci_access.projects[0].access_as.ci_job: cannot be set together with agent (only one of agent, impersonate, ci_job) (line 6)"],
    ],
    [
      "empty access_as",
      "ci_access:\n  projects:\n  - id: a/b\n    access_as: {}\n",
      ["ci_access.projects[0].access_as: must set exactly one of agent, impersonate, ci_job (line 4)"],
    ],
    [
      "access_as agent without {}",
      "ci_access:\n  projects:\n  - id: a/b\n    access_as:\n      agent:\n",
      ['ci_access.projects[0].access_as: must set exactly one of agent, impersonate, ci_job (agent is empty: write "agent: {}") (line 4)'],
    ],
    [
      "ci_user (documented upstream, never implemented)",
      "ci_access:\n  projects:\n  - id: a/b\n    access_as:\n      ci_user: {}\n",
      [
        "ci_access.projects[0].access_as: must set exactly one of agent, impersonate, ci_job (line 4)",
        "ci_access.projects[0].access_as.ci_user: unknown key (line 5)",
      ],
    ],
    [
      "impersonate without username, empty group, extra without values",
      `ci_access:
  groups:
  - id: g
    access_as:
      impersonate:
        groups: ["", ops]
        extra:
        - key: k
          val: []
        - val: [""]
`,
      [
        "ci_access.groups[0].access_as.impersonate.username: is required (line 5)",
        "ci_access.groups[0].access_as.impersonate.groups[0]: must not be empty (line 6)",
        "ci_access.groups[0].access_as.impersonate.extra[0].val: must have at least one item (line 9)",
        "ci_access.groups[0].access_as.impersonate.extra[1].key: is required (line 10)",
        "ci_access.groups[0].access_as.impersonate.extra[1].val[0]: must not be empty (line 10)",
      ],
    ],
    [
      "empty environment name",
      "ci_access:\n  projects:\n  - id: a/b\n    environments:\n    - prod\n    - ''\n",
      ["ci_access.projects[0].environments[1]: must not be empty (line 6)"],
    ],
    ["null list item", "ci_access:\n  projects:\n  -\n", ["ci_access.projects[0]: must not be null (line 3)"]],
    [
      "gitops enums, duration, ref",
      `gitops:
  manifest_projects:
  - id: ''
    dry_run_strategy: always
    prune_propagation_policy: Orphan
    inventory_policy: take_all
    reconcile_timeout: 1h
    prune_timeout: 3600
    ref: {}
    paths:
    - glob: ''
`,
      [
        "gitops.manifest_projects[0].id: must not be empty (line 3)",
        'gitops.manifest_projects[0].dry_run_strategy: must be one of "none", "client", "server", got "always" (line 4)',
        'gitops.manifest_projects[0].prune_propagation_policy: must be one of "orphan", "background", "foreground", got "Orphan" (line 5)',
        'gitops.manifest_projects[0].inventory_policy: must be one of "must_match", "adopt_if_no_inventory", "adopt_all", got "take_all" (line 6)',
        'gitops.manifest_projects[0].reconcile_timeout: must be a duration in seconds with an "s" suffix, e.g. "3600s" or "1.5s", got "1h" (line 7)',
        'gitops.manifest_projects[0].prune_timeout: must be a duration in seconds with an "s" suffix, e.g. "3600s" or "1.5s", got 3600 (line 8)',
        "gitops.manifest_projects[0].ref: must set exactly one of tag, branch, commit (line 9)",
        "gitops.manifest_projects[0].paths[0].glob: must not be empty (line 11)",
      ],
    ],
    [
      "two refs",
      "gitops:\n  manifest_projects:\n  - id: a/b\n    ref:\n      tag: v1\n      branch: main\n",
      ["gitops.manifest_projects[0].ref.branch: cannot be set together with tag (only one of tag, branch, commit) (line 6)"],
    ],
    [
      "prune not a boolean",
      "gitops:\n  manifest_projects:\n  - id: a/b\n    prune: sometimes\n",
      ['gitops.manifest_projects[0].prune: must be true or false, got "sometimes" (line 4)'],
    ],
    [
      "log level",
      "observability:\n  logging:\n    level: verbose\n    grpc_level: 7\n",
      [
        'observability.logging.level: must be one of "info", "debug", "warn", "error", got "verbose" (line 3)',
        'observability.logging.grpc_level: must be one of "info", "debug", "warn", "error", got 7 (line 4)',
      ],
    ],
    ["log level in upper case", "observability:\n  logging:\n    level: INFO\n", ['observability.logging.level: must be one of "info", "debug", "warn", "error", got "INFO" (line 3)']],
    [
      "user_access",
      "user_access:\n  access_as:\n    user: {}\n    agent: {}\n  projects:\n  - id: ''\n  groups:\n  - {}\n",
      [
        "user_access.access_as.agent: cannot be set together with user (only one of agent, user) (line 4)",
        "user_access.projects[0].id: must not be empty (line 6)",
        "user_access.groups[0].id: is required (line 8)",
      ],
    ],
    ["container_scanning needs a cadence", "container_scanning:\n  vulnerability_report:\n    namespaces: [a]\n", ["container_scanning.cadence: is required (line 1)"]],
    [
      "container_scanning: what GitLab's agentk or the API server would refuse",
      "container_scanning:\n  cadence: '0 25 * * *'\n  vulnerability_report:\n    namespaces:\n    - team-a\n    - Team_B\n  resource_requirements:\n    limits:\n      cpu: lots\n      memory: 1Gi\n    requests:\n      cpu: 600m\n",
      [
        "container_scanning.cadence: is not a valid cron expression: end of range (25) above maximum (23): hour field: 25 (line 2)",
        'container_scanning.vulnerability_report.namespaces[1]: "Team_B" is not a namespace name (lower-case letters, digits and \'-\', at most 63) (line 6)',
        'container_scanning.resource_requirements.limits.cpu: "lots" is not a Kubernetes quantity (e.g. 500m or 1) (line 9)',
        "container_scanning.resource_requirements.requests: cpu 600m is more than the limit 500m (the API server refuses such a pod) (line 11)",
      ],
    ],
    [
      "remote_development intervals must be positive",
      "remote_development:\n  enabled: true\n  dns_zone: ws.example.dev\n  partial_sync_interval: 0s\n  full_sync_interval: -5s\n",
      [
        'remote_development.partial_sync_interval: must be greater than 0s, got "0s" (line 4)',
        'remote_development.full_sync_interval: must be greater than 0s, got "-5s" (line 5)',
      ],
    ],
    [
      "remote_development enabled needs a DNS zone",
      "remote_development:\n  enabled: true\n  gitlab_workspaces_proxy:\n    namespace: ''\n",
      ["remote_development.dns_zone: is required (line 1)", "remote_development.gitlab_workspaces_proxy.namespace: must not be empty (line 4)"],
    ],
    [
      "remote_development dns_zone is a DNS name",
      "remote_development:\n  dns_zone: Bad_Zone..dev\n",
      ['remote_development.dns_zone: must be a lowercase DNS name such as "workspaces.example.dev", got "Bad_Zone..dev" (line 2)'],
    ],
    ["flux url is a string", "flux:\n  webhook_receiver_url: [a]\n", ["flux.webhook_receiver_url: must be a string, got a list (line 2)"]],
    ["YAML syntax", "ci_access:\n  projects: [\n", ["config: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ] (line 3)"]],
    ["duplicate keys", "gitops: {}\nflux: {}\ngitops: {}\n", ["config: invalid YAML: Map keys must be unique (line 3)"]],
    ["tabs for indentation", "ci_access:\n\tprojects: []\n", ["config: invalid YAML: Tabs are not allowed as indentation (line 2)"]],
    ["non-string key", "ci_access:\n  [a]: 1\n", ["ci_access: keys must be plain strings (line 2)"]],
  ];
  for (const [title, yaml, expected] of bad) {
    it(`rejects: ${title}`, () => {
      expect(problems(yaml)).to.deep.equal(expected);
    });
  }

  it("rejects a file over the size limit, and bytes that are not UTF-8", () => {
    expect(problems("flux: {}\n" + "#".repeat(200), 100)).to.deep.equal(["config: file is too big (209 bytes, maximum is 100)"]);
    expect(problems(new Uint8Array(128 * 1024 + 1).fill(0x23))).to.deep.equal([
      "config: file is too big (131073 bytes, maximum is 131072)",
    ]);
    expect(problems(new Uint8Array([0x66, 0x6c, 0xff, 0x3a]))).to.deep.equal(["config: is not valid UTF-8"]);
    expect(accepted(new TextDecoder().decode(Buffer.from("flux: {webhook_receiver_url: 'ü'}\n")))).to.deep.equal({
      flux: { webhook_receiver_url: "ü" },
    });
  });

  it("throws AgentConfigError listing every problem from parseAgentConfigFile", () => {
    let error: unknown;
    try {
      parseAgentConfigFile("flux: 1\nobservability: 2\n");
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(AgentConfigError);
    expect((error as AgentConfigError).problems).to.have.length(2);
    expect((error as AgentConfigError).message).to.equal(
      "flux: must be a mapping, got 1 (line 1); observability: must be a mapping, got 2 (line 2)",
    );
  });

  it("survives alias loops and deep alias fan-out without blowing up", function () {
    // A walk that followed every alias would not end in this test's lifetime (a blow-up is a timeout).
    this.timeout(10_000);
    // A billion-laughs shape: schema depth bounds the walk, strings cannot hold lists.
    const yaml = `a: &a ["x", "x"]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n`;
    expect(problems(yaml).length).to.equal(3);
    const fanOut = problems(
      `ci_access:\n  projects: &p\n  - id: a/b\n    environments: &e [x, y, z]\n  groups: [${Array(50).fill("{id: g, environments: *e}").join(", ")}]\nuser_access: {projects: *p}\n`.replace(
        "user_access: {projects: *p}",
        "user_access: {projects: *p, bogus: 1}",
      ),
    );
    // Walked to the end: the last key's problem is there, once per place the aliases reach.
    expect(fanOut.at(-1)).to.equal("user_access.bogus: unknown key (line 6)");
    expect(fanOut.filter((p) => p.startsWith("ci_access.groups["))).to.have.length(50);
  });
});
