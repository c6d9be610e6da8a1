import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { waitFor } from "@kasbridge/testing/wait";
import { GitClient, startGitPlatform, type GitTestPlatform } from "../git/git-fixtures.test-support.js";
import type { Project } from "../services/projects.js";
import { useTestStore } from "../testing/fixtures.test-support.js";

/** The platform's own repositories: `git push` over smart HTTP updates agent configs. */
describe("platform/agent-config with the platform's git repositories", () => {
  const db = useTestStore("sqlite");
  let p: GitTestPlatform;
  let git: GitClient;
  let project: Project;

  beforeEach(async () => {
    p = await startGitPlatform(db.store);
    git = await GitClient.create();
    project = await p.project("config");
    await git.ok(["clone", "-q", p.url(project, p.adminToken), "work"]);
    await git.ok(["checkout", "-q", "-b", "main"], "work");
  });
  afterEach(async () => {
    await p.services.agentConfigs.idle();
    await p.close();
    await git.dispose();
  });

  async function pushed(files: Record<string, string>): Promise<string> {
    const commit = await git.commit("work", files);
    await git.ok(["push", "-q", "origin", "main"], "work");
    return commit;
  }

  it("accepts a pushed config, keeps it over an invalid one, empties it when the file is deleted", async () => {
    const agent = await p.services.agents.create(project.id, "prod", null);
    const changes: string[] = [];
    p.services.agentConfigs.subscribe((c) => changes.push(c.commitId));

    const good = await pushed({ ".gitlab/agents/prod/config.yaml": "ci_access:\n  projects:\n  - id: group/config\n" });
    await waitFor(() => changes.length === 1, undefined, "accepted config");
    expect(changes).to.deep.equal([good]);
    expect((await p.services.agentConfigs.allowedAgentsForProject(project.id)).map((a) => a.via)).to.deep.equal(["project"]);

    const bad = await pushed({ ".gitlab/agents/prod/config.yaml": "ci_access:\n  projects:\n  - id: 12\n" });
    await waitFor(async () => Boolean((await p.services.agentConfigs.get(agent.id))?.error), undefined, "the error recorded");
    let state = (await p.services.agentConfigs.get(agent.id))!;
    expect(state.commitId).to.equal(good);
    expect(state.error).to.deep.include({ commitId: bad, message: "ci_access.projects[0].id: must be a string, got 12 (line 3)" });

    await git.ok(["rm", "-q", ".gitlab/agents/prod/config.yaml"], "work");
    await git.ok(["commit", "-q", "-m", "remove"], "work");
    await git.ok(["push", "-q", "origin", "main"], "work");
    const removed = (await git.ok(["rev-parse", "HEAD"], "work")).trim();
    await waitFor(() => changes.length === 2, undefined, "empty config");
    state = (await p.services.agentConfigs.get(agent.id))!;
    expect(state).to.deep.include({ commitId: removed, error: null });
    expect((await p.services.agentConfigs.allowedAgentsForProject(project.id)).map((a) => a.via)).to.deep.equal(["implicit"]);
  });

  it("gives an agent created after its file the config of the default branch", async () => {
    const commit = await pushed({ ".gitlab/agents/late/config.yaml": "observability: {logging: {level: debug}}\n" });
    await waitFor(() => p.events.length === 1, undefined, "push event");
    const agent = await p.services.agents.create(project.id, "late", null);
    const state = (await p.services.agentConfigs.get(agent.id))!;
    expect(state.commitId).to.equal(commit);
    expect(state.config.observability?.logging?.level).to.equal(1);
  });
});
