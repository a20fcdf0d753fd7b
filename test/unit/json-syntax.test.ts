// Where a body stops being JSON: the place JSON.parse reports, said in the server's own words.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { jsonSyntaxError } from "../../hooks/json-syntax.ts";

const cases: [string, string, string][] = [
  ["{not json", "1:2", "expected a property name in double quotes or '}'"],
  ['{"a":1,}', "1:8", "expected a property name in double quotes"],
  ['{"a" 1}', "1:6", "expected ':' after the property name"],
  ['{"a": [1,2', "1:11", "the body ends early: expected ',' or ']'"],
  ['[1,]', "1:4", "expected a value (an object, array, string, number, true, false or null)"],
  ['{"a":1}}', "1:8", "expected nothing after the end of the JSON value"],
  ['["a\\q"]', "1:4", "a backslash in a string must start"],
  ['["a\\u12"]', "1:4", "a backslash in a string must start"],
  ["[01]", "1:3", "expected ',' or ']'"],
  ["[-]", "1:2", "expected a value"],
  ['{"a": nul}', "1:7", "expected a value"],
  ['"abc', "1:1", "the body ends early: the string that starts here is not closed"],
  ['\n\n  {"a": 1 "b"}', "3:11", "expected ',' or '}'"],
  ['{"a": "x\ty"}', "1:9", "a control character (U+0000 to U+001F) in a string must be escaped"],
  ["  ", "1:3", "the body ends early: expected a value"],
];

for (const [text, where, problem] of cases) {
  test(`${JSON.stringify(text)}: ${where} ${problem}`, () => {
    const fault = jsonSyntaxError(text);
    assert.ok(fault, "a fault is found");
    assert.equal(`${fault.line}:${fault.column}`, where);
    assert.ok(fault.problem.startsWith(problem), fault.problem);
  });
}

test("a deeply nested body is scanned without recursion", () => {
  assert.equal(jsonSyntaxError("[".repeat(200_000) + "]".repeat(200_000)), undefined);
  assert.equal(jsonSyntaxError("[".repeat(200_000))?.problem, "the body ends early: expected a value or ']'");
});

test("agrees with JSON.parse on what is JSON: generated documents, and the same with one character changed, cut or added", () => {
  const accepts = (text: string) => {
    try {
      JSON.parse(text);
      return true;
    } catch {
      return false;
    }
  };
  const edited = fc
    .tuple(fc.json({ maxDepth: 4 }), fc.nat(), fc.constantFrom("", ",", "}", "]", '"', ":", "\\", "\n", "\u0001", " ", "x", "-", "1", "e", "."), fc.constantFrom("replace", "insert", "cut"))
    .map(([json, at, char, edit]) => {
      const i = json.length === 0 ? 0 : at % json.length;
      return edit === "cut" ? json.slice(0, i) : json.slice(0, i) + char + json.slice(edit === "replace" ? i + 1 : i);
    });
  fc.assert(
    fc.property(fc.oneof(fc.json({ maxDepth: 4 }), edited, fc.string()), (text) => {
      assert.equal(jsonSyntaxError(text) === undefined, accepts(text), JSON.stringify(text));
    }),
    { numRuns: 5000, seed: 20261122 },
  );
});
