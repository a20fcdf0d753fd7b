// The command line of backup, restore, verify, schedule and delete (gateway/backup/flags.ts, main.ts): settings read
// as the gateway reads its own, and a bad one stops the program with exit code 2 and one line
// naming it, before anything reaches core etcd; a defective file makes verify exit 3.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ConfigError, parseCommandLine } from "../../gateway/backup/flags.ts";
import { BackupWriter } from "../../gateway/backup/format.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const SCHEDULE = ["--tenant=alpha", "--volume-claim=backups", "--keep=7", "--kube-ca-file=/t/ca.crt", "--token-file=/t/token"];
const CORE = ["--tenant=alpha", "--prefix=/etcdstorage/alpha/", "--endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379", "--cacert=/c/ca.crt", "--cert=/c/tls.crt", "--key=/c/tls.key"];

function refusal(argv: string[]): string {
  try {
    parseCommandLine(argv);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.message;
  }
  assert.fail(`accepted: ${argv.join(" ")}`);
}

describe("backup flags", () => {
  test("each command's settings, with defaults", () => {
    assert.deepEqual(parseCommandLine(["backup", ...CORE, "--out=/backups/a.bak"]), {
      command: "backup",
      tenant: "alpha",
      prefix: "/etcdstorage/alpha/",
      endpoints: ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
      coreCaFile: "/c/ca.crt",
      coreCertFile: "/c/tls.crt",
      coreKeyFile: "/c/tls.key",
      out: "/backups/a.bak",
      readBudgetBytes: 64 * 1024 * 1024,
    });
    const restore = parseCommandLine(["restore", ...CORE, "--in=/backups/a.bak", "--quota-bytes=1048576"]);
    assert.equal(restore.command === "restore" && restore.quotaBytes, 1048576);
    assert.equal(restore.command === "restore" && restore.cleanupTimeoutSeconds, 300);
    assert.equal(restore.command === "restore" && restore.resultFile, undefined);
    const job = parseCommandLine(["backup", ...CORE, "--out=/backups/a.bak", "--result-file=/dev/termination-log"]);
    assert.equal(job.command === "backup" && job.resultFile, "/dev/termination-log");
    assert.deepEqual(parseCommandLine(["schedule", ...SCHEDULE]), { command: "schedule", tenant: "alpha", volumeClaim: "backups", keep: 7, kubeCaFile: "/t/ca.crt", tokenFile: "/t/token", pollSeconds: 2 });
    assert.deepEqual(parseCommandLine(["delete", "--file=/backups/a.etcdbackup"]), { command: "delete", file: "/backups/a.etcdbackup" });
    assert.deepEqual(parseCommandLine(["verify", "--in=a.bak"]), { command: "verify", in: "a.bak", list: false });
    assert.deepEqual(parseCommandLine(["verify", "--in=a.bak", "--list"]), { command: "verify", in: "a.bak", list: true });
  });

  const cases: [string, string[], RegExp][] = [
    ["no command", [], /^command: missing: expected backup, restore, verify, schedule, delete/],
    ["an unknown command", ["snapshot"], /^command: "snapshot" is not a command/],
    ["an unknown flag", ["backup", ...CORE, "--out=x", "--namespace=y"], /^--namespace: unknown flag for backup/],
    ["a flag of another command", ["backup", ...CORE, "--out=x", "--quota-bytes=5"], /^--quota-bytes: unknown flag for backup/],
    ["a flag without its value", ["backup", ...CORE, "--out"], /^--out: expected --out=value/],
    ["a missing --out", ["backup", ...CORE], /^--out: is required/],
    ["--keep of none", ["schedule", ...SCHEDULE, "--keep=0"], /^--keep: "0" must be a whole number of at least 1/],
    ["--keep that is not a number", ["schedule", ...SCHEDULE, "--keep=all"], /^--keep: "all" must be a whole number of at least 1/],
    ["a schedule without its token", ["schedule", ...SCHEDULE.filter((f) => !f.startsWith("--token-file"))], /^--token-file: is required/],
    ["a volume claim that is no name", ["schedule", ...SCHEDULE, "--volume-claim=Backups!"], /^--volume-claim: "Backups!" is not a PersistentVolumeClaim's name/],
    ["core etcd's flags given to a schedule (it has no credentials)", ["schedule", ...SCHEDULE, "--endpoints=https://10.0.0.1:2379"], /^--endpoints: unknown flag for schedule/],
    ["delete without --file", ["delete"], /^--file: is required/],
    ["a missing --quota-bytes", ["restore", ...CORE, "--in=x"], /^--quota-bytes: is required/],
    ["a quota that is not a number", ["restore", ...CORE, "--in=x", "--quota-bytes=1Gi"], /^--quota-bytes: "1Gi" must be a whole number of at least 1/],
    ["a tenant that is not a DNS label", ["backup", ...CORE, "--tenant=Alpha", "--out=x"], /^--tenant: "Alpha" is not a DNS label/],
    ["a prefix of another tenant", ["backup", ...CORE, "--prefix=/etcdstorage/beta/", "--out=x"], /^--prefix: "\/etcdstorage\/beta\/" must end with "\/alpha\/"/],
    ["a prefix keys.ts refuses", ["backup", ...CORE, "--prefix=/", "--out=x"], /^--prefix: tenant prefix "\/" must be printable ASCII/],
    ["an endpoint without TLS", ["backup", ...CORE, "--endpoints=http://10.0.0.1:2379", "--out=x"], /^--endpoints: "http:\/\/10.0.0.1:2379" must be https:\/\/host:port/],
    ["a --list that is neither true nor false", ["verify", "--in=x", "--list=yes"], /^--list: "yes" must be true or false/],
  ];
  for (const [what, argv, expected] of cases) test(`refused: ${what}`, () => assert.match(refusal(argv), expected));
});

describe("the programs' exit codes", { concurrency: 4 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "backup-flags-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const run = (args: string[]) => spawnSync(process.execPath, ["gateway/backup/main.ts", ...args], { cwd: REPO, encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, timeout: 20_000 });
  const oneLine = (stderr: string) => {
    assert.equal(stderr.split("\n").filter(Boolean).length, 1, stderr);
    return stderr.trim();
  };

  test("a bad flag: exit 2, one line naming it", () => {
    const result = run(["backup", ...CORE, "--out=/backups/x", "--read-budget-bytes=lots"]);
    assert.equal(result.status, 2);
    assert.match(oneLine(result.stderr), /^invalid configuration: --read-budget-bytes: "lots" must be a whole number/);
  });

  test("an invalid --keep: exit 2, one line naming it", () => {
    const result = run(["schedule", ...SCHEDULE, "--keep=-1"]);
    assert.equal(result.status, 2);
    assert.match(oneLine(result.stderr), /^invalid configuration: --keep: "-1" must be a whole number of at least 1/);
  });

  test("a schedule outside a pod (no KUBERNETES_SERVICE_HOST) or without its token: exit 2 naming it", async () => {
    const outside = run(["schedule", ...SCHEDULE]);
    assert.equal(outside.status, 2);
    assert.match(oneLine(outside.stderr), /^invalid configuration: KUBERNETES_SERVICE_HOST: and KUBERNETES_SERVICE_PORT must be set/);
    await writeFile(path.join(dir, "ca.crt"), "x");
    const tokenless = spawnSync(process.execPath, ["gateway/backup/main.ts", "schedule", ...SCHEDULE, `--kube-ca-file=${dir}/ca.crt`, `--token-file=${dir}/token`], { cwd: REPO, encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" }, timeout: 20_000 });
    assert.equal(tokenless.status, 2);
    assert.match(oneLine(tokenless.stderr), /^invalid configuration: --token-file: cannot read .*\/token: ENOENT/);
  });

  test("delete: the file and what a stopped backup left of it go, a missing one is no error", async () => {
    await writeFile(path.join(dir, "old.etcdbackup"), "x");
    await writeFile(path.join(dir, "old.etcdbackup.partial"), "x");
    await writeFile(path.join(dir, "other.etcdbackup"), "x");
    for (let i = 0; i < 2; i++) {
      const result = run(["delete", `--file=${dir}/old.etcdbackup`]);
      assert.equal(result.status, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), { deleted: true, file: `${dir}/old.etcdbackup` });
    }
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith(".etcdbackup") || f.endsWith(".partial")).sort(), ["other.etcdbackup"]);
  });

  test("credentials that cannot be read: exit 2 naming the flag", async () => {
    const result = run(["backup", ...CORE, `--out=${dir}/a.bak`]);
    assert.equal(result.status, 2);
    assert.match(oneLine(result.stderr), /^invalid configuration: --cert: cannot read \/c\/tls.crt: ENOENT/);
  });

  test("an --in that cannot be read, an --out that exists or cannot be written: exit 2 naming it", async () => {
    await writeFile(path.join(dir, "taken.bak"), "x");
    for (const [args, expected] of [
      [["verify", `--in=${dir}/missing.bak`], /^invalid configuration: --in: cannot read .*missing.bak: ENOENT$/],
      [["restore", ...CORE, `--in=${dir}/missing.bak`, "--quota-bytes=5"], /^invalid configuration: --in: cannot read/],
      [["backup", ...CORE, `--out=${dir}/taken.bak`], /^invalid configuration: --out: .*taken.bak exists; a backup never overwrites one$/],
      [["backup", ...CORE, `--out=${dir}/no/such/dir/a.bak`], /^invalid configuration: --out: cannot write into .*: ENOENT$/],
    ] as const) {
      const result = run([...args]);
      assert.equal(result.status, 2, result.stderr);
      assert.match(oneLine(result.stderr), expected);
    }
  });

  test("verify: a good file exits 0 with its header and summary, a defective one exits 3 naming the defect", async () => {
    const chunks: Buffer[] = [];
    const writer = new BackupWriter(async (chunk) => {
      chunks.push(chunk);
    });
    await writer.header({ tenant: "alpha", prefix: "/etcdstorage/alpha/", revision: 7, createdAt: "2025-01-01T00:00:00.000Z" });
    await writer.key(Buffer.from("/registry/a"), 0, Buffer.from("value"));
    const trailer = await writer.finish();
    const file = Buffer.concat(chunks);
    await writeFile(path.join(dir, "good.bak"), file);
    const good = run(["verify", `--in=${dir}/good.bak`, "--list"]);
    assert.equal(good.status, 0, good.stderr);
    const lines = good.stdout.trim().split("\n").map((line) => JSON.parse(line));
    assert.deepEqual(lines, [
      { header: { format: "etcdstorage-backup", version: 1, tenant: "alpha", prefix: "/etcdstorage/alpha/", revision: 7, createdAt: "2025-01-01T00:00:00.000Z" } },
      { key: "/registry/a", valueBytes: 5 },
      { verified: true, file: `${dir}/good.bak`, ...trailer },
    ]);
    await writeFile(path.join(dir, "short.bak"), file.subarray(0, file.length - 3));
    const short = run(["verify", `--in=${dir}/short.bak`]);
    assert.equal(short.status, 3);
    assert.match(oneLine(short.stderr), /^verify: .*short.bak: truncated: the file ends at byte \d+, inside record 3 \(trailer/);
  });
});
