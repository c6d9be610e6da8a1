import { expect } from "chai";
import { describe, it } from "mocha";
import { wildcardMatch } from "./wildcard.js";

describe("util/wildcard", () => {
  it("matches whole strings, * standing for any run of characters but a line break", () => {
    const table: [string, string, boolean][] = [
      ["main", "main", true],
      ["main", "main2", false],
      ["*", "", true],
      ["*", "a/b/c", true],
      ["*-stable", "1-0-stable", true],
      ["*-stable", "1-0-stable-x", false],
      ["release/*", "release/1/2", true],
      ["a*b*c", "abc", true],
      ["a*b*c", "aXbYbZc", true],
      ["a*b*c", "acb", false],
      ["a**b", "ab", true],
      ["ab*ab", "ab", false], // prefix and suffix may not overlap
      ["ab*ab", "abab", true],
      ["*aab*", "aaab", true], // the literal's first partial match must not hide the real one
      ["*abcabd*", "abcabcabd", true],
      ["x*", "x\ny", false],
      ["x*\ny", "x1\ny", true],
      ["x*\n*", "x\n", true],
      ["[a-z]*", "[a-z]q", true],
      ["[a-z]*", "q", false],
      ["?*", "?x", true],
      ["?*", "x", false],
    ];
    for (const [pattern, text, matches] of table) {
      expect(wildcardMatch(pattern, text), `${JSON.stringify(pattern)} ~ ${JSON.stringify(text)}`).to.equal(matches);
    }
  });

  it("answers patterns that make backtracking matchers run for hours", () => {
    // Each of these takes a backtracking regex engine (or a naive recursive matcher) longer than
    // the test's timeout; here each is one linear pass.
    const as = "a".repeat(40);
    expect(wildcardMatch("(a+)+b*", as)).to.equal(false);
    expect(wildcardMatch("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a".repeat(100_000))).to.equal(false);
    const long = "ab".repeat(200_000);
    expect(wildcardMatch(`*${"ab".repeat(1000)}c*`, long)).to.equal(false);
    expect(wildcardMatch(`${"*a".repeat(5000)}*`, "a".repeat(5000))).to.equal(true);
  });
});
