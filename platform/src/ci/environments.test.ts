import { describe, it } from "mocha";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { parse } from "yaml";
import {
  authorizationAppliesToEnvironment,
  environmentNameErrors,
  environmentPatternMatches,
  environmentSlug,
  guessEnvironmentTier,
  slugSuffixFromDigest,
} from "./environments.js";
import { generateKubeconfig } from "./kubeconfig.js";
import { rolesForAccessLevel } from "./roles.js";

const suffixOf = (name: string) => slugSuffixFromDigest(createHash("sha256").update(name).digest("hex"));

describe("platform/ci environments, kubeconfig and roles", () => {
  it("slugs names as Gitlab::Slug::Environment (its spec table)", () => {
    // GitLab's spec stubs the digest with 'a' * 64, whose suffix is 'q517sa'.
    expect(slugSuffixFromDigest("a".repeat(64))).to.equal("q517sa");
    const table: [string, string, boolean][] = [
      ["staging-12345678901234567", "staging-123456789", true],
      ["9-staging-123456789012345", "env-9-staging-123", true],
      ["staging-1234567890123456", "staging-1234567890123456", false],
      ["staging-1234567890123456-", "staging-123456789", true],
      ["production", "production", false],
      ["PRODUCTION", "production", true],
      ["review/1-foo", "review-1-foo", true],
      ["1-foo", "env-1-foo", true],
      ["1/foo", "env-1-foo", true],
      ["foo-", "foo", false],
      ["foo--bar", "foo-bar", true],
      ["foo**bar", "foo-bar", true],
      ["*-foo", "env-foo", true],
      ["staging-12345678-", "staging-12345678", false],
      ["staging-12345678-01234567", "staging-12345678", true],
    ];
    for (const [name, base, suffixed] of table) {
      expect(environmentSlug(name), name).to.equal(suffixed ? `${base}-${suffixOf(name)}` : base);
    }
  });

  it("guesses tiers from names and validates names as GitLab", () => {
    const tiers: Record<string, string> = {
      "review/feature": "development",
      dev: "development",
      qa: "testing",
      "acceptance": "testing",
      staging: "staging",
      "pre-prod": "staging",
      production: "production",
      prd: "production",
      live: "production",
      canary: "other",
    };
    for (const [name, tier] of Object.entries(tiers)) expect(guessEnvironmentTier(name), name).to.equal(tier);
    expect(environmentNameErrors("review/${CI_COMMIT_REF_SLUG} x.y_z-1")).to.deep.equal([]);
    expect(environmentNameErrors("/x")).to.have.length(1);
    expect(environmentNameErrors("x/")).to.have.length(1);
    expect(environmentNameErrors("a:b")).to.have.length(1);
    expect(environmentNameErrors("")).to.deep.equal(["can't be blank"]);
  });

  it("matches environments patterns as Gitlab::Ci::EnvironmentMatcher: anchored, only * is special", () => {
    // GitLab's spec table (spec/lib/gitlab/ci/environment_matcher_spec.rb).
    const table: [string, string, boolean][] = [
      ["production", "production", true],
      ["production", "productiom", false],
      ["production", "production-eu", false],
      ["review/*", "review/123", true],
      ["review/*", "review/feature-branch", true],
      ["review/*/*", "review/123/456", true],
      ["*-this-is-a-pattern-*", "abc123-this-is-a-pattern-abc123", true],
      ["prod*", "production", true],
      ["*", "anything-goes", true],
      ["*", "", true],
      ["review/*/*", "review/123", false],
      ["*-this-is-a-pattern-*", "abc123-this-is-a-pattern", false],
      ["review/*", "review123", false],
      ["review/*", "not-review/app1", false],
      ["review/*", "staging-review/test", false],
      ["prod*", "not-prod-thing", false],
      ["prod.internal*", "prodXinternal-app", false],
      ["prod[*", "prod[abc", true],
      ["prod*", "production\nmalicious", false],
      // Regex syntax is literal: no error, no special meaning, no backtracking.
      ["a(*", "a(b", true],
      ["(a+)+b*", "aaaa", false],
      ["(a+)+b*", "(a+)+bcd", true],
      ["", "", false],
      [" ", " ", false],
    ];
    for (const [pattern, environment, matches] of table) {
      expect(environmentPatternMatches(pattern, environment), `${JSON.stringify(pattern)} ~ ${JSON.stringify(environment)}`).to.equal(matches);
    }
    expect(authorizationAppliesToEnvironment(undefined, null)).to.equal(true);
    expect(authorizationAppliesToEnvironment([], "x")).to.equal(true);
    expect(authorizationAppliesToEnvironment(["production"], null)).to.equal(false);
    expect(authorizationAppliesToEnvironment(["staging", "prod*"], "production")).to.equal(true);
  });

  it("builds GitLab's CI kubeconfig: one cluster, a user and a context per agent, no current context", () => {
    expect(generateKubeconfig({ proxyUrl: "https://kas.example/k8s-proxy", jobToken: "glcbt-x", agents: [] })).to.equal(undefined);
    const yaml = generateKubeconfig({
      proxyUrl: "https://kas.example/k8s-proxy",
      jobToken: "glcbt-secret",
      agents: [
        { agentId: 7, agentName: "prod", configProjectPath: "ops/config", defaultNamespace: "apps" },
        { agentId: 9, agentName: "dev", configProjectPath: "ops/config" },
      ],
    })!;
    expect(parse(yaml)).to.deep.equal({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "gitlab", cluster: { server: "https://kas.example/k8s-proxy" } }],
      users: [
        { name: "agent:7", user: { token: "ci:7:glcbt-secret" } },
        { name: "agent:9", user: { token: "ci:9:glcbt-secret" } },
      ],
      contexts: [
        { name: "ops/config:prod", context: { cluster: "gitlab", namespace: "apps", user: "agent:7" } },
        { name: "ops/config:dev", context: { cluster: "gitlab", user: "agent:9" } },
      ],
    });
  });

  it("names every role up to an access level", () => {
    expect(rolesForAccessLevel(0)).to.deep.equal([]);
    expect(rolesForAccessLevel(10)).to.deep.equal(["guest"]);
    expect(rolesForAccessLevel(30)).to.deep.equal(["guest", "planner", "reporter", "developer"]);
    expect(rolesForAccessLevel(50)).to.deep.equal(["guest", "planner", "reporter", "developer", "maintainer", "owner"]);
  });
});
