// Hook request validation. Options that never change the input: a removeAdditional or useDefaults
// here would strip or invent fields of observed children, and the answer would delete data.
import { Ajv } from "ajv";
import { describeErrors, loadSchema } from "./schema.ts";
import type { HookRequest } from "./observed.ts";

const ajv = new Ajv({ allErrors: true, strict: true, useDefaults: false, coerceTypes: false, removeAdditional: false });
const hookRequestSchema = loadSchema("hook-request.yaml");
const validateHookRequest = ajv.compile(hookRequestSchema);
const validateCustomizeRequest = ajv.compile({ ...hookRequestSchema, required: ["parent"] });
// The second CompositeController's requests: the same shape, an EtcdStorageBackup as parent.
const backupRequestSchema = structuredClone(hookRequestSchema) as { properties: { parent: { properties: { kind: { const: string } } } } };
backupRequestSchema.properties.parent.properties.kind.const = "EtcdStorageBackup";
const validateBackupRequest = ajv.compile(backupRequestSchema);
const validateBackupCustomizeRequest = ajv.compile({ ...backupRequestSchema, required: ["parent"] });

export type Validated<T> = { ok: true; request: T } | { ok: false; problems: string[] };

export function parseHookRequest(body: unknown): Validated<HookRequest> {
  return check(validateHookRequest, body);
}

export function parseCustomizeRequest(body: unknown): Validated<Pick<HookRequest, "parent" | "controller">> {
  return check(validateCustomizeRequest, body);
}

export function parseBackupHookRequest(body: unknown): Validated<HookRequest> {
  return check(validateBackupRequest, body);
}

export function parseBackupCustomizeRequest(body: unknown): Validated<Pick<HookRequest, "parent" | "controller">> {
  return check(validateBackupCustomizeRequest, body);
}

function check<T>(validate: typeof validateHookRequest, body: unknown): Validated<T> {
  if (validate(body)) return { ok: true, request: body as T };
  return { ok: false, problems: describeErrors(validate.errors, body, { rootLabel: "body", quoteValues: false }) };
}
