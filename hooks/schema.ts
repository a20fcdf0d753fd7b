// The EtcdStorage schema of schemas/ serves twice: the CRD is generated from it, and the hooks
// validate and default every parent with it, CEL rules and list-map keys included, so the hook
// refuses exactly what the API server would refuse if its CRD were bypassed.
import { readFileSync } from "node:fs";
import { Ajv, type AnySchemaObject, type ErrorObject, type ValidateFunction } from "ajv";
import { Environment } from "@marcbachmann/cel-js";
import { load as loadYaml } from "js-yaml";
import { parseQuantity, Quantity } from "./quantity.ts";

type Schema = Record<string, unknown>;

export function loadSchema(file: string): Schema {
  // Beside this module's folder: schemas/ when run from source, dist/schemas/ (the build copies
  // it there) when run compiled from dist/hooks/, as the image runs it.
  const raw = loadYaml(readFileSync(new URL(`../schemas/${file}`, import.meta.url), "utf8")) as Schema;
  return inlineRefs(raw, (raw.$defs ?? {}) as Record<string, Schema>) as Schema;
}

/** CRDs allow no $ref: every "#/$defs/x" is replaced by its definition, sibling keywords winning. */
function inlineRefs(node: unknown, defs: Record<string, Schema>): unknown {
  if (Array.isArray(node)) return node.map((item) => inlineRefs(item, defs));
  if (node === null || typeof node !== "object") return node;
  const out: Schema = {};
  const ref = (node as Schema).$ref;
  if (typeof ref === "string") {
    const def = defs[ref.replace("#/$defs/", "")];
    if (!def) throw new Error(`schema: unknown $ref ${ref}`);
    Object.assign(out, inlineRefs(def, defs));
  }
  for (const [key, value] of Object.entries(node as Schema)) {
    if (key !== "$ref" && key !== "$defs") out[key] = inlineRefs(value, defs);
  }
  return out;
}

export const etcdStorageSchema = loadSchema("etcdstorage.v1alpha1.yaml");
export const etcdStorageBackupSchema = loadSchema("etcdstoragebackup.v1alpha1.yaml");

// CEL as the API server evaluates CRD rules: the standard library, and the functions of
// Kubernetes' quantity library (k8s.io/apiserver/pkg/cel/library, Kubernetes 1.29+) that the
// schema uses.
const cel = new Environment({ unlistedVariablesAreDyn: true })
  .registerType("Quantity", Quantity)
  .registerFunction("quantity(string): Quantity", (text: string) => {
    const quantity = parseQuantity(text);
    if (!quantity) throw new Error(`invalid quantity: ${text}`);
    return quantity;
  })
  .registerFunction({ name: "compareTo", receiverType: "Quantity", returnType: "int", params: [{ name: "other", type: "Quantity" }], handler: (self: Quantity, other: Quantity) => BigInt(self.compareTo(other)) });

interface CelRule {
  rule: string;
  message?: string;
  fieldPath?: string;
}

/** An ajv for Kubernetes structural schemas: CEL rules and list-map keys are enforced, other x- keywords ignored. */
export function kubernetesAjv(options: { useDefaults: boolean }): Ajv {
  // strictTypes off: an int-or-string quantity carries number and string keywords beside its
  // anyOf (the only shape the API server takes), legal JSON Schema that strictTypes refuses.
  const ajv = new Ajv({ allErrors: true, useDefaults: options.useDefaults, strict: true, strictTypes: false, formats: { int32: true, int64: true, "date-time": true } });
  ajv.addKeyword({
    keyword: "x-kubernetes-validations",
    errors: true,
    compile(rules: CelRule[]) {
      const compiled = rules.map((rule) => ({ ...rule, evaluate: cel.parse(rule.rule) }));
      const validate = (self: unknown, context?: { instancePath: string }): boolean => {
        const errors: Partial<ErrorObject>[] = [];
        for (const rule of compiled) {
          let ok: unknown;
          try {
            ok = rule.evaluate({ self });
          } catch {
            // a value the rule cannot read (a malformed duration, a wrong type) fails the structural
            // schema, which reports it better; as in Kubernetes, the rule adds nothing then
            ok = true;
          }
          if (ok !== true) {
            errors.push({
              keyword: "x-kubernetes-validations",
              instancePath: (context?.instancePath ?? "") + (rule.fieldPath ?? "").replaceAll(".", "/"),
              message: rule.message ?? `failed rule: ${rule.rule}`,
              params: { rule: rule.rule },
            });
          }
        }
        (validate as unknown as { errors: unknown }).errors = errors;
        return errors.length === 0;
      };
      return validate as never;
    },
  });
  ajv.addKeyword({
    keyword: "x-kubernetes-list-map-keys",
    errors: true,
    compile(keys: string[]) {
      const validate = (items: unknown, context?: { instancePath: string }): boolean => {
        if (!Array.isArray(items)) return true;
        const seen = new Set<string>();
        const errors: Partial<ErrorObject>[] = [];
        items.forEach((item, index) => {
          const key = JSON.stringify(keys.map((k) => (item as Record<string, unknown>)?.[k]));
          if (seen.has(key)) {
            errors.push({
              keyword: "x-kubernetes-list-map-keys",
              instancePath: `${context?.instancePath ?? ""}/${index}`,
              message: `duplicate entry with the same ${keys.join(" and ")} as an earlier one`,
              params: { keys },
            });
          }
          seen.add(key);
        });
        (validate as unknown as { errors: unknown }).errors = errors;
        return errors.length === 0;
      };
      return validate as never;
    },
  });
  ajv.addKeyword({ keyword: "x-kubernetes-list-type" });
  // Its anyOf of integer and string is what ajv checks.
  ajv.addKeyword({ keyword: "x-kubernetes-int-or-string" });
  ajv.addKeyword({ keyword: "x-kubernetes-preserve-unknown-fields" });
  return ajv;
}

/** "spec.caCertConfigMap[0].namespace: must match pattern ... (got "A")" */
/**
 * rootLabel names the whole value when an error is about it, not one of its fields; quoteValues
 * adds the offending value (for a spec, never for a hook request, whose values may be Secret data).
 */
export function describeErrors(errors: readonly ErrorObject[] | null | undefined, root: unknown, options: { rootLabel?: string; quoteValues: boolean }): string[] {
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const error of errors ?? []) {
    const path = jsonPointerToField(error.instancePath);
    const missing = error.keyword === "required" ? `.${(error.params as { missingProperty: string }).missingProperty}` : "";
    const field = (path + missing).replace(/^\./, "");
    const value = missing || !options.quoteValues ? undefined : valueAt(root, error.instancePath);
    const got = value === undefined || typeof value === "object" ? "" : ` (got ${JSON.stringify(value)})`;
    const allowed = error.keyword === "enum" ? `: ${(error.params as { allowedValues: unknown[] }).allowedValues.join(", ")}` : "";
    const reason = `${error.keyword === "required" ? "is required" : error.message}${allowed}${got}`;
    const label = field || options.rootLabel;
    const text = label ? `${label}: ${reason}` : reason;
    // a field gets one message: the first (structural) reason is the useful one
    if (!seen.has(field)) problems.push(text);
    seen.add(field);
  }
  return problems;
}

function jsonPointerToField(pointer: string): string {
  return pointer
    .split("/")
    .slice(1)
    .map((part) => part.replaceAll("~1", "/").replaceAll("~0", "~"))
    .map((part) => (/^\d+$/.test(part) ? `[${part}]` : `.${part}`))
    .join("");
}

function valueAt(root: unknown, pointer: string): unknown {
  let node = root;
  for (const part of pointer.split("/").slice(1)) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<string, unknown>)[part.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return node;
}

export type { AnySchemaObject, ValidateFunction };
