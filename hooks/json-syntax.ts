// Where a text stops being JSON (RFC 8259), to say so without quoting it: a hook request carries
// Secret data, and JSON.parse's own messages quote the text around the fault. Run only once
// JSON.parse has refused a body; iterative, so a deeply nested body cannot overflow the stack.

export interface JsonSyntaxError {
  line: number;
  column: number;
  /** What would have been valid there. */
  problem: string;
}

const WHITESPACE = /[ \t\n\r]*/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const LITERAL = /true|false|null/y;
const ESCAPE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;

type Expecting = "value" | "valueOrEnd" | "name" | "nameOrEnd" | "colon" | "commaOrEnd" | "nothing";

const EXPECTED: Record<Exclude<Expecting, "commaOrEnd">, string> = {
  value: "expected a value (an object, array, string, number, true, false or null)",
  valueOrEnd: "expected a value or ']'",
  name: "expected a property name in double quotes",
  nameOrEnd: "expected a property name in double quotes or '}'",
  colon: "expected ':' after the property name",
  nothing: "expected nothing after the end of the JSON value",
};

/** The first place where text is not JSON, or undefined when it is. */
export function jsonSyntaxError(text: string): JsonSyntaxError | undefined {
  const open: ("{" | "[")[] = [];
  let at = 0;
  let expecting: Expecting = "value";
  const fail = (problem: string, where = at): JsonSyntaxError => ({ ...lineAndColumn(text, where), problem });
  const take = (pattern: RegExp): boolean => {
    pattern.lastIndex = at;
    if (!pattern.test(text)) return false;
    at = pattern.lastIndex;
    return true;
  };
  const closing = () => (open.at(-1) === "{" ? "}" : "]");
  const afterValue = (): Expecting => (open.length === 0 ? "nothing" : "commaOrEnd");

  for (;;) {
    take(WHITESPACE);
    const expected = expecting === "commaOrEnd" ? `expected ',' or '${closing()}'` : EXPECTED[expecting];
    if (at === text.length) return expecting === "nothing" ? undefined : fail(`the body ends early: ${expected}`);
    const char = text[at];
    if ((expecting === "valueOrEnd" && char === "]") || (expecting === "nameOrEnd" && char === "}") || (expecting === "commaOrEnd" && char === closing())) {
      at++;
      open.pop();
      expecting = afterValue();
    } else if (expecting === "commaOrEnd" && char === ",") {
      at++;
      expecting = open.at(-1) === "{" ? "name" : "value";
    } else if (expecting === "colon" && char === ":") {
      at++;
      expecting = "value";
    } else if ((expecting === "name" || expecting === "nameOrEnd") && char === '"') {
      const broken = skipString();
      if (broken) return broken;
      expecting = "colon";
    } else if (expecting === "value" || expecting === "valueOrEnd") {
      if (char === "{" || char === "[") {
        at++;
        open.push(char);
        expecting = char === "{" ? "nameOrEnd" : "valueOrEnd";
        continue;
      }
      if (char === '"') {
        const broken = skipString();
        if (broken) return broken;
      } else if (!take(NUMBER) && !take(LITERAL)) {
        return fail(expected);
      }
      expecting = afterValue();
    } else {
      return fail(expected);
    }
  }

  /** Moves past the string that starts at `at`, or says where it breaks. */
  function skipString(): JsonSyntaxError | undefined {
    const start = at;
    at++;
    while (at < text.length) {
      const code = text.charCodeAt(at);
      if (code === 0x22) {
        at++;
        return undefined;
      }
      if (code === 0x5c) {
        if (!take(ESCAPE)) return fail("a backslash in a string must start \\\", \\\\, \\/, \\b, \\f, \\n, \\r, \\t or \\u and 4 hex digits");
      } else if (code < 0x20) {
        return fail("a control character (U+0000 to U+001F) in a string must be escaped");
      } else {
        at++;
      }
    }
    return fail("the body ends early: the string that starts here is not closed", start);
  }
}

function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: offset - lineStart + 1 };
}
