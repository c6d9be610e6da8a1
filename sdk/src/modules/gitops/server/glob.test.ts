import { expect } from "chai";
import { GlobSyntaxError, globMatcher, inHiddenDirectory } from "./glob.js";

describe("GitOps globs (doublestar)", () => {
  const matches = (glob: string, paths: string[]) => paths.filter(globMatcher(glob));

  it("matches GitLab's default glob at every depth, the root included", () => {
    const all = ["a.yaml", "b.yml", "c.json", "d.txt", "x/e.yaml", "x/y/f.json", "x/y/g.yamlx"];
    expect(matches("**/*.{yaml,yml,json}", all)).to.deep.equal(["a.yaml", "b.yml", "c.json", "x/e.yaml", "x/y/f.json"]);
  });

  it("keeps * and ? inside one segment, and supports classes, escapes and trailing **", () => {
    const all = ["app/a.yaml", "app/sub/b.yaml", "app/ab.yaml", "apps/c.yaml", "app/[x].yaml"];
    expect(matches("app/*.yaml", all)).to.deep.equal(["app/a.yaml", "app/ab.yaml", "app/[x].yaml"]);
    expect(matches("app/?.yaml", all)).to.deep.equal(["app/a.yaml"]);
    expect(matches("app/[!a].yaml", ["app/a.yaml", "app/b.yaml"])).to.deep.equal(["app/b.yaml"]);
    expect(matches("app/\\[x\\].yaml", all)).to.deep.equal(["app/[x].yaml"]);
    expect(matches("app/**", all)).to.deep.equal(["app/a.yaml", "app/sub/b.yaml", "app/ab.yaml", "app/[x].yaml"]);
    expect(matches("app/**/b.yaml", all)).to.deep.equal(["app/sub/b.yaml"]);
  });

  it("expands nested alternatives, keeps escaped and stray braces literal", () => {
    expect(matches("{a,b{1,2}}.yaml", ["a.yaml", "b1.yaml", "b2.yaml", "b.yaml", "c.yaml"])).to.deep.equal(["a.yaml", "b1.yaml", "b2.yaml"]);
    expect(matches("\\{x}.yaml", ["{x}.yaml", "x.yaml"])).to.deep.equal(["{x}.yaml"]);
    expect(matches("a}.yaml", ["a}.yaml"])).to.deep.equal(["a}.yaml"]);
    expect(() => globMatcher("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}")).to.throw(GlobSyntaxError, /more than 64 alternatives/);
  });

  it("matches adversarial globs and paths without backtracking (would hang a regular expression)", () => {
    const deep = `${Array.from({ length: 300 }, (_, i) => `d${i}`).join("/")}/file.txt`;
    expect(globMatcher(`${"**/".repeat(25)}x.yaml`)(deep)).to.equal(false);
    expect(globMatcher("**/a/**/b/**/c/**/d/**/e.yaml")(deep)).to.equal(false);
    expect(globMatcher(`${"*a".repeat(30)}b`)("a".repeat(250))).to.equal(false);
    expect(globMatcher(`${"*a".repeat(30)}*`)("a".repeat(250))).to.equal(true);
  });

  it("refuses malformed globs with a clear error", () => {
    expect(() => globMatcher("app/[a")).to.throw(GlobSyntaxError, /unclosed \[/);
    expect(() => globMatcher("{a,b")).to.throw(GlobSyntaxError, /unclosed \{/);
    expect(() => globMatcher("a\\")).to.throw(GlobSyntaxError, /escape/);
  });

  it("tells files in hidden directories", () => {
    expect(inHiddenDirectory(".gitlab/agents/a/config.yaml")).to.equal(true);
    expect(inHiddenDirectory("deploy/.hidden/x.yaml")).to.equal(true);
    expect(inHiddenDirectory("deploy/.x.yaml")).to.equal(false);
  });
});
