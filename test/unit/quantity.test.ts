// Quantities compare by value, whatever the notation, exactly.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseQuantity } from "../../hooks/quantity.ts";

const compare = (a: string | number, b: string | number) => parseQuantity(a)!.compareTo(parseQuantity(b)!);

const cases: [string | number, "<" | "=" | ">", string | number][] = [
  ["0.3", "=", "300m"],
  [".5", "=", "500m"],
  ["1.", "=", 1],
  [1, "=", "1000m"],
  ["1Ki", "=", 1024],
  ["1Gi", "=", "1024Mi"],
  ["1k", "<", "1Ki"],
  ["1M", "<", "1Mi"],
  ["1E", "<", "1Ei"],
  ["100n", "<", "1u"],
  ["0.501", ">", "500m"],
  ["0.1", "<", "100.000000001m"],
  ["256Mi", "<", "268435457"],
];
for (const [a, relation, b] of cases) {
  test(`${a} ${relation} ${b}`, () => {
    assert.equal(compare(a, b), { "<": -1, "=": 0, ">": 1 }[relation]);
    assert.equal(compare(b, a), { "<": 1, "=": 0, ">": -1 }[relation]);
  });
}

test("anything else is not a quantity", () => {
  for (const text of ["", "-1", "+1", "1e3", "1Ki2", "Mi", "1 Mi", "1mi", "0x10", "."]) assert.equal(parseQuantity(text), undefined, text);
});

test("whole units round down, exactly", () => {
  const floors: [string | number, bigint][] = [
    ["256Mi", 268435456n],
    ["1.5Ki", 1536n],
    ["1000.9", 1000n],
    ["1.0000001Ki", 1024n],
    ["0.5", 0n],
    ["999m", 0n],
    ["1k", 1000n],
    [4096, 4096n],
    ["8Ei", 9223372036854775808n],
  ];
  for (const [text, whole] of floors) assert.equal(parseQuantity(text)!.floor(), whole, String(text));
});
