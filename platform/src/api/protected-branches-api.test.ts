import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { AccessLevel } from "../services/access-levels.js";
import { call, startTestPlatform, type RequestOptions, type TestPlatform } from "../testing/http-fixtures.test-support.js";
import { useTestStore } from "../testing/fixtures.test-support.js";

describe("platform REST API: protected branches (GitLab's /projects/:id/protected_branches)", () => {
  const db = useTestStore("sqlite");
  let p: TestPlatform;
  let projectId: number;
  const api = (method: string, path: string, options: RequestOptions = {}) =>
    call(p.baseUrl, method, `/api/v4/projects/${projectId}/protected_branches${path}`, { token: p.adminToken, ...options });

  beforeEach(async () => {
    p = await startTestPlatform(db.store);
    const project = await call(p.baseUrl, "POST", "/api/v4/projects", { token: p.adminToken, body: { name: "config", default_branch: "trunk" } });
    projectId = project.body.id;
  });
  afterEach(async () => {
    await p.close();
  });

  async function member(username: string, level: number) {
    const user = await p.services.users.create({ username, name: username });
    await p.services.members.addProjectMember(projectId, user.id, level);
    return (await p.services.personalAccessTokens.create(user.id, { name: "t", scopes: ["api"] })).secret;
  }

  it("protects a new project's default branch as GitLab does by default", async () => {
    const list = await api("GET", "");
    expect(list.status).to.equal(200);
    expect(list.headers.get("x-total")).to.equal("1");
    const [trunk] = list.body;
    expect(trunk).to.deep.equal({
      id: trunk.id,
      name: "trunk",
      push_access_levels: [{ id: trunk.id, access_level: 40, access_level_description: "Maintainers", deploy_key_id: null }],
      merge_access_levels: [{ id: trunk.id, access_level: 40, access_level_description: "Maintainers" }],
      allow_force_push: false,
      code_owner_approval_required: false,
    });
    expect((await api("GET", "/trunk")).body).to.deep.equal(trunk);
  });

  it("protects, lists, shows and unprotects branches and wildcards with GitLab's fields and errors", async () => {
    const created = await api("POST", "", { body: { name: "release/*", push_access_level: 30, merge_access_level: "0", allow_force_push: true } });
    expect(created.status).to.equal(201);
    expect(created.body).to.deep.include({ name: "release/*", allow_force_push: true });
    expect(created.body.push_access_levels[0]).to.include({ access_level: 30, access_level_description: "Developers + Maintainers" });
    expect(created.body.merge_access_levels[0]).to.include({ access_level: 0, access_level_description: "No one" });
    const admins = await api("POST", "", { body: { name: "prod", push_access_level: 60 } });
    expect(admins.body.push_access_levels[0]).to.include({ access_level: 60, access_level_description: "Instance admins" });
    expect(admins.body.merge_access_levels[0]).to.include({ access_level: 40 });

    // A wildcard's "/" is URL-encoded in the path, as GitLab requires.
    expect((await api("GET", "/release%2F*")).body.id).to.equal(created.body.id);
    expect((await api("GET", "")).body.map((b: { name: string }) => b.name)).to.deep.equal(["prod", "release/*", "trunk"]);
    expect((await api("GET", "?search=REL")).body.map((b: { name: string }) => b.name)).to.deep.equal(["release/*"]);

    expect(await api("POST", "", { body: { name: "prod" } })).to.deep.include({ status: 409, body: { message: "Protected branch 'prod' already exists" } });
    for (const [field, value] of [["push_access_level", 20], ["merge_access_level", 50], ["push_access_level", "x"]] as const) {
      const bad = await api("POST", "", { body: { name: "x", [field]: value } });
      expect(bad.status, `${field}=${value}`).to.equal(400);
      expect(bad.body.error).to.match(new RegExp(`^${field} (does not have a valid value|is invalid)$`));
    }
    expect((await api("POST", "", { body: {} })).body.error).to.equal("name is missing");

    expect((await api("DELETE", "/release%2F*")).status).to.equal(204);
    expect(await api("DELETE", "/release%2F*")).to.deep.include({ status: 404, body: { message: "404 Not found" } });
    expect(await api("GET", "/nope")).to.deep.include({ status: 404, body: { message: "404 Not found" } });
  });

  it("is for Maintainers only, as GitLab's admin_project; strangers do not see the project", async () => {
    const developer = await member("dev", AccessLevel.DEVELOPER);
    const maintainer = await member("maint", AccessLevel.MAINTAINER);
    const stranger = (await p.services.personalAccessTokens.create((await p.services.users.create({ username: "s", name: "s" })).id, { name: "t", scopes: ["api"] })).secret;
    expect((await api("GET", "", { token: developer })).status).to.equal(403);
    expect((await api("DELETE", "/trunk", { token: developer })).status).to.equal(403);
    expect((await api("POST", "", { token: developer, body: { name: "mine" } })).status).to.equal(403);
    expect(await api("GET", "", { token: stranger })).to.deep.include({ status: 404, body: { message: "404 Project Not Found" } });
    expect((await api("POST", "", { token: maintainer, body: { name: "mine" } })).status).to.equal(201);
    expect((await api("DELETE", "/trunk", { token: maintainer })).status).to.equal(204);
  });
});
