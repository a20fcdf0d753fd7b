// Writes the request fixtures of test/fixtures (used by the contract tests and the README's curl
// examples). The core etcd certificates in them are valid for 100 years, so the fixtures stay usable.
import { writeFileSync } from "node:fs";
import { coreRelated, etcdStorage, makeCorePki, namespacesRelated, SAMPLE_SPEC, syncRequest, testConfig } from "../test/support/requests.ts";

const config = testConfig();
const pki = await makeCorePki(new Date("2026-01-01T00:00:00Z"), 100);
const sync = syncRequest(etcdStorage("sample-apiserver", SAMPLE_SPEC), { ...coreRelated(config, pki), ...namespacesRelated(["sample-system"]) });
const finalize = { ...sync, parent: { ...sync.parent, metadata: { ...sync.parent.metadata, deletionTimestamp: "2026-11-22T12:00:00Z", finalizers: ["metacontroller.io/compositecontroller-etcdstorage"] } }, finalizing: true };
const customize = { controller: sync.controller, parent: sync.parent };

const write = (name: string, body: unknown) => writeFileSync(new URL(`../test/fixtures/${name}`, import.meta.url), `${JSON.stringify(body, null, 2)}\n`);
write("sync-request.json", sync);
write("finalize-request.json", finalize);
write("customize-request.json", customize);
