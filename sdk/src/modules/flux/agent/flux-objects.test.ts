import { expect } from "chai";
import { gitlabName, legacySecretName, owningRepositoryKey, projectPathOf, receiver, receiverName, receiverSecret, receiverSecretName } from "./flux-objects.js";

describe("Flux objects (names, matching, content)", () => {
  it("names objects gitlab-…, cut to the limit, never ending on a non-alphanumeric character", () => {
    expect(receiverName("app")).to.equal("gitlab-app");
    expect(receiverSecretName("app")).to.equal("gitlab-receiver-app");
    expect(legacySecretName("app")).to.equal("gitlab-app");
    const long = "a".repeat(60);
    expect(receiverName(long)).to.equal(`gitlab-${"a".repeat(56)}`).and.have.length(63);
    // The cut lands on "-": the last two characters become "-x".
    const dashed = `${"b".repeat(55)}-cdef`;
    expect(gitlabName(dashed, 63)).to.equal(`gitlab-${"b".repeat(54)}-x`).and.have.length(63);
    expect(receiverSecretName("c".repeat(300))).to.have.length(253);
  });

  it("matches GitRepository URLs on the platform's host to project paths", () => {
    expect(projectPathOf("https://gitlab.example.com/group/sub/proj.git", "gitlab.example.com")).to.equal("group/sub/proj");
    expect(projectPathOf("http://GitLab.example.com:8080/group/proj", "gitlab.example.com")).to.equal("group/proj");
    expect(projectPathOf("ssh://git@gitlab.example.com/group/proj.git", "gitlab.example.com")).to.equal("group/proj");
    expect(projectPathOf("https://github.com/group/proj.git", "gitlab.example.com")).to.equal(undefined);
    expect(projectPathOf("git@gitlab.example.com:group/proj.git", "gitlab.example.com")).to.equal(undefined);
    expect(projectPathOf("https://gitlab.example.com/", "gitlab.example.com")).to.equal(undefined);
    expect(projectPathOf(undefined, "gitlab.example.com")).to.equal(undefined);
  });

  it("builds the Secret and the Receiver agentk applies, owned by the GitRepository", () => {
    const repo = { metadata: { name: "app", namespace: "flux-system", uid: "u-1" } };
    const owner = { apiVersion: "source.toolkit.fluxcd.io/v1", kind: "GitRepository", name: "app", uid: "u-1", controller: true, blockOwnerDeletion: true };
    expect(receiverSecret(repo, 42n)).to.deep.equal({
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: "gitlab-receiver-app",
        namespace: "flux-system",
        annotations: { "app.kubernetes.io/managed-by": "gitlab", "agent.gitlab.com/id": "42" },
        ownerReferences: [owner],
      },
      data: { token: "" },
    });
    const r = receiver(repo, 42n, "group/app");
    expect(r.metadata.annotations).to.deep.equal({
      "app.kubernetes.io/managed-by": "gitlab",
      "agent.gitlab.com/id": "42",
      "agent.gitlab.com/project": "group/app",
    });
    expect(r.spec).to.deep.equal({
      type: "generic",
      interval: "5m",
      resources: [{ kind: "GitRepository", name: "app", namespace: "flux-system" }],
      secretRef: { name: "gitlab-receiver-app" },
    });
    expect(owningRepositoryKey(r)).to.equal("flux-system/app");
    expect(owningRepositoryKey({ metadata: { namespace: "x", ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: "d", controller: true }] } })).to.equal(undefined);
  });
});
