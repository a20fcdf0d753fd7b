// The backup format of one tenant (README: "Backup format"): a magic, a format version, then
// records, each framed and checksummed on its own, so that a writer streams a tenant page by page
// and a reader checks and restores it record by record; a trailer closes the file with the counts
// and a SHA-256 of every byte before it.
//
//   file    = magic (8 bytes) version (u16) header lease-or-key* trailer
//   record  = type (u8) length (u32) body (length bytes) crc32 (u32, of type, length and body)
//   header  = "H": JSON {format, version, tenant, prefix, revision, createdAt}
//   lease   = "L": number (u32, 1, 2, 3...) ttl (u32 seconds left when it was read; 0: had expired)
//   key     = "K": lease (u32, 0: none) keyLength (u32) key value
//   trailer = "T": JSON {keys, leases, bytes, sha256}
//
// Integers are big-endian; keys are stored without the tenant's prefix, in ascending byte order,
// each once; a key's lease record comes before it. Nothing here touches etcd.
import { createHash, type Hash } from "node:crypto";
import { crc32 } from "node:zlib";

export const MAGIC = Buffer.from("\x89ESB\r\n\x1a\n", "latin1");
export const FORMAT = "etcdstorage-backup";
export const VERSION = 1;
/** The largest record body: a value as large as any etcd answer the gateway takes (64 MiB), its key and fields. */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024 + 64 * 1024;
const MAX_JSON_BYTES = 64 * 1024;

export const RECORD = { header: 0x48, lease: 0x4c, key: 0x4b, trailer: 0x54 } as const;
const RECORD_NAMES: Record<number, string> = { 0x48: "header", 0x4c: "lease", 0x4b: "key", 0x54: "trailer" };
const FRAME = 5; // type and length
const CRC = 4;
const START = MAGIC.length + 2;

export interface BackupHeader {
  format: typeof FORMAT;
  version: number;
  /** The EtcdStorage the keys were read from. */
  tenant: string;
  /** Its prefix in core etcd, which every stored key had in front. */
  prefix: string;
  /** The core revision every key was read at. */
  revision: number;
  /** When the first page was read (ISO 8601, UTC). */
  createdAt: string;
}

export interface BackupTrailer {
  keys: number;
  leases: number;
  /** Bytes of keys (without the prefix) and values. */
  bytes: number;
  /** SHA-256 (hex) of every byte of the file before the trailer record. */
  sha256: string;
}

export type BackupEntry =
  | { kind: "header"; header: BackupHeader }
  | { kind: "lease"; number: number; ttl: number }
  | { kind: "key"; key: Buffer; lease: number; value: Buffer }
  | { kind: "trailer"; trailer: BackupTrailer };

/** What is wrong with a file, in words that name it and where (a byte offset). */
export class BackupDefect extends Error {}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/** Bytes written out in chunks of about this size. */
const FLUSH_BYTES = 1024 * 1024;

/**
 * Writes a backup to `sink` as it is read: header, then leases and keys in key order, then
 * `finish()`. Holds at most one chunk and one record; checks what a reader would refuse.
 */
export class BackupWriter {
  private readonly sink: (chunk: Buffer) => Promise<void>;
  private readonly hash: Hash = createHash("sha256");
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private started = false;
  private finished = false;
  private keys = 0;
  private leases = 0;
  private bytes = 0;
  private lastKey: Buffer | undefined;

  constructor(sink: (chunk: Buffer) => Promise<void>) {
    this.sink = sink;
  }

  async header(header: Omit<BackupHeader, "format" | "version">): Promise<void> {
    if (this.started) throw new Error("internal: a backup has one header");
    this.started = true;
    const version = Buffer.alloc(2);
    version.writeUInt16BE(VERSION);
    this.add(MAGIC);
    this.add(version);
    const full: BackupHeader = { format: FORMAT, version: VERSION, tenant: header.tenant, prefix: header.prefix, revision: header.revision, createdAt: header.createdAt };
    await this.record(RECORD.header, [Buffer.from(JSON.stringify(full))]);
  }

  /** Declares the next lease with the TTL it had left; returns its number for the keys on it. */
  async lease(ttlSeconds: number): Promise<number> {
    this.expectBody();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 0 || ttlSeconds > 0xffffffff) throw new Error(`internal: lease TTL ${ttlSeconds} is not a whole number of seconds`);
    const body = Buffer.alloc(8);
    body.writeUInt32BE(++this.leases, 0);
    body.writeUInt32BE(ttlSeconds, 4);
    await this.record(RECORD.lease, [body]);
    return this.leases;
  }

  /** A key (without the prefix), its lease's number (0: none) and its value; keys in ascending order. */
  async key(key: Buffer, lease: number, value: Buffer): Promise<void> {
    this.expectBody();
    if (key.length === 0) throw new Error("internal: an empty key");
    if (this.lastKey !== undefined && Buffer.compare(this.lastKey, key) >= 0) throw new Error("internal: keys must be written in ascending order, each once");
    if (!Number.isInteger(lease) || lease < 0 || lease > this.leases) throw new Error(`internal: key on lease ${lease}, which was not declared`);
    if (8 + key.length + value.length > MAX_RECORD_BYTES) throw new Error(`a key of ${key.length} bytes with a value of ${value.length} bytes is larger than a backup record may hold (${MAX_RECORD_BYTES} bytes)`);
    const fields = Buffer.alloc(8);
    fields.writeUInt32BE(lease, 0);
    fields.writeUInt32BE(key.length, 4);
    await this.record(RECORD.key, [fields, key, value]);
    this.lastKey = Buffer.from(key);
    this.keys++;
    this.bytes += key.length + value.length;
  }

  /** Writes the trailer and the last chunk; the file is complete once the sink has it. */
  async finish(): Promise<BackupTrailer> {
    this.expectBody();
    this.finished = true;
    const trailer: BackupTrailer = { keys: this.keys, leases: this.leases, bytes: this.bytes, sha256: this.hash.digest("hex") };
    // The trailer is not part of the hash it carries.
    this.add(frameRecord(RECORD.trailer, [Buffer.from(JSON.stringify(trailer))]), false);
    await this.flush();
    return trailer;
  }

  private expectBody(): void {
    if (!this.started || this.finished) throw new Error("internal: records go between the header and the trailer");
  }

  private async record(type: number, parts: Buffer[]): Promise<void> {
    this.add(frameRecord(type, parts));
    if (this.pendingBytes >= FLUSH_BYTES) await this.flush();
  }

  private add(bytes: Buffer, hashed = true): void {
    if (hashed) this.hash.update(bytes);
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const chunk = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    await this.sink(chunk);
  }
}

function frameRecord(type: number, parts: Buffer[]): Buffer {
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  const record = Buffer.allocUnsafe(FRAME + length + CRC);
  record[0] = type;
  record.writeUInt32BE(length, 1);
  let at = FRAME;
  for (const part of parts) at += part.copy(record, at);
  record.writeUInt32BE(crc32(record.subarray(0, at)), at);
  return record;
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** Reads exactly n bytes at a time from chunks (a file stream), or fewer at the end. */
class Input {
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string>;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private ended = false;
  /** Bytes handed out so far: the offset of the next byte. */
  offset = 0;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  async take(n: number): Promise<Buffer> {
    while (this.bufferedBytes < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) this.ended = true;
      else {
        const chunk = typeof next.value === "string" ? Buffer.from(next.value, "latin1") : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
        this.buffered.push(chunk);
        this.bufferedBytes += chunk.length;
      }
    }
    const size = Math.min(n, this.bufferedBytes);
    const whole = this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered, this.bufferedBytes);
    const taken = whole.subarray(0, size);
    const rest = whole.subarray(size);
    this.buffered = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    this.offset += size;
    return taken;
  }

  /** Whether any byte follows (reads ahead one chunk). */
  async atEnd(): Promise<boolean> {
    if (this.bufferedBytes > 0) return false;
    const next = await this.take(1);
    if (next.length === 0) return true;
    this.buffered.unshift(next);
    this.bufferedBytes += 1;
    this.offset -= 1;
    return false;
  }

  /** Counts the bytes left (for a message), reading them. */
  async drain(): Promise<number> {
    let count = 0;
    for (;;) {
      const chunk = await this.take(FLUSH_BYTES);
      if (chunk.length === 0) return count;
      count += chunk.length;
    }
  }
}

/**
 * The entries of a backup, in order, each checked before it is handed out: framing, checksums,
 * the version, the header, key order, lease numbers; the trailer's counts and SHA-256 last. A
 * defect throws BackupDefect naming what is wrong and at which byte. A consumer that must not act
 * on a defective file reads it whole first (verifyBackup), then again to act.
 */
export async function* readBackup(source: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<BackupEntry, void, undefined> {
  const input = new Input(source);
  const hash = createHash("sha256");
  const start = await input.take(START);
  if (start.length === 0) throw new BackupDefect("truncated: the file is empty");
  const magic = start.subarray(0, MAGIC.length);
  if (!MAGIC.subarray(0, magic.length).equals(magic)) throw new BackupDefect("not an etcdstorage backup: the file does not start with the format's magic bytes");
  if (start.length < START) throw new BackupDefect(`truncated: the file ends at byte ${start.length}, before its format version`);
  const version = start.readUInt16BE(MAGIC.length);
  if (version > VERSION) throw new BackupDefect(`format version ${version} is newer than this program reads (version ${VERSION}): use the etcdstorage image that wrote it, or a newer one`);
  if (version < 1) throw new BackupDefect(`format version ${version} is not a version of the format (versions start at 1)`);
  hash.update(start);

  let records = 0;
  let header: BackupHeader | undefined;
  let keys = 0;
  let leases = 0;
  let bytes = 0;
  let lastKey: Buffer | undefined;
  for (;;) {
    const at = input.offset;
    const frame = await input.take(FRAME);
    if (frame.length === 0) throw new BackupDefect(`truncated: the file ends at byte ${at}, after ${records} records, without its trailer`);
    if (frame.length < FRAME) throw new BackupDefect(`truncated: the file ends at byte ${input.offset}, inside the frame of record ${records + 1} (at byte ${at})`);
    const type = frame[0]!;
    const length = frame.readUInt32BE(1);
    const name = RECORD_NAMES[type];
    if (name === undefined) throw new BackupDefect(`corrupt: record ${records + 1} at byte ${at} has type 0x${type.toString(16).padStart(2, "0")}, which version ${VERSION} does not define`);
    if (length > MAX_RECORD_BYTES) throw new BackupDefect(`corrupt: record ${records + 1} (${name}) at byte ${at} claims ${length} bytes, more than a record may hold (${MAX_RECORD_BYTES})`);
    const rest = await input.take(length + CRC);
    if (rest.length < length + CRC) throw new BackupDefect(`truncated: the file ends at byte ${input.offset}, inside record ${records + 1} (${name}, at byte ${at}, of ${length} bytes)`);
    const body = rest.subarray(0, length);
    const stored = rest.readUInt32BE(length);
    const computed = crc32(body, crc32(frame));
    if (stored !== computed) throw new BackupDefect(`corrupt: record ${records + 1} (${name}) at byte ${at} fails its checksum (CRC-32 ${hex(stored)} stored, ${hex(computed)} computed)`);
    records++;
    const where = `record ${records} (${name}) at byte ${at}`;

    if (header === undefined && type !== RECORD.header) throw new BackupDefect(`corrupt: ${where}: the first record must be the header`);
    if (type === RECORD.header) {
      if (header !== undefined) throw new BackupDefect(`corrupt: ${where}: a second header`);
      header = parseHeader(body, version, where);
      hash.update(frame).update(rest);
      yield { kind: "header", header };
    } else if (type === RECORD.lease) {
      if (length !== 8) throw new BackupDefect(`corrupt: ${where}: a lease record holds 8 bytes, this one ${length}`);
      const number = body.readUInt32BE(0);
      if (number !== leases + 1) throw new BackupDefect(`corrupt: ${where} declares lease ${number} where lease ${leases + 1} comes next`);
      leases = number;
      hash.update(frame).update(rest);
      yield { kind: "lease", number, ttl: body.readUInt32BE(4) };
    } else if (type === RECORD.key) {
      if (length < 8) throw new BackupDefect(`corrupt: ${where}: a key record holds at least 8 bytes, this one ${length}`);
      const lease = body.readUInt32BE(0);
      const keyLength = body.readUInt32BE(4);
      if (keyLength === 0 || keyLength > length - 8) throw new BackupDefect(`corrupt: ${where} gives its key ${keyLength} bytes of the ${length - 8} it holds`);
      if (lease > leases) throw new BackupDefect(`corrupt: ${where} puts its key on lease ${lease}, which no lease record before it declares`);
      const key = body.subarray(8, 8 + keyLength);
      if (lastKey !== undefined && Buffer.compare(lastKey, key) >= 0) throw new BackupDefect(`corrupt: ${where}: its key does not sort after the key before it (keys are stored in ascending order, each once)`);
      lastKey = key;
      keys++;
      bytes += length - 8;
      hash.update(frame).update(rest);
      yield { kind: "key", key, lease, value: body.subarray(8 + keyLength) };
    } else {
      const trailer = parseTrailer(body, where);
      const sha256 = hash.digest("hex");
      const counted: BackupTrailer = { keys, leases, bytes, sha256 };
      for (const field of ["keys", "leases", "bytes", "sha256"] as const) {
        if (trailer[field] !== counted[field]) throw new BackupDefect(`corrupt: the trailer (${where}) says ${field} ${trailer[field]}, the file before it has ${counted[field]}`);
      }
      if (!(await input.atEnd())) {
        const after = input.offset;
        throw new BackupDefect(`corrupt: ${await input.drain()} bytes follow the trailer (from byte ${after})`);
      }
      yield { kind: "trailer", trailer };
      return;
    }
  }
}

/** Reads a whole backup and checks it; resolves with its header and trailer, or throws BackupDefect. */
export async function verifyBackup(source: AsyncIterable<Buffer | Uint8Array | string>, each?: (entry: BackupEntry) => void): Promise<{ header: BackupHeader; trailer: BackupTrailer }> {
  let header: BackupHeader | undefined;
  for await (const entry of readBackup(source)) {
    each?.(entry);
    if (entry.kind === "header") header = entry.header;
    if (entry.kind === "trailer") return { header: header!, trailer: entry.trailer };
  }
  throw new Error("internal: readBackup ended without a trailer");
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function parseJson(body: Buffer, where: string): Record<string, unknown> {
  if (body.length > MAX_JSON_BYTES) throw new BackupDefect(`corrupt: ${where} holds ${body.length} bytes of JSON, more than ${MAX_JSON_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (error) {
    throw new BackupDefect(`corrupt: ${where} is not JSON (${(error as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new BackupDefect(`corrupt: ${where} is not a JSON object`);
  return value as Record<string, unknown>;
}

const isCount = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

function parseHeader(body: Buffer, version: number, where: string): BackupHeader {
  const json = parseJson(body, where);
  if (json.format !== FORMAT) throw new BackupDefect(`corrupt: ${where} names format ${JSON.stringify(json.format)}, not ${JSON.stringify(FORMAT)}`);
  if (json.version !== version) throw new BackupDefect(`corrupt: ${where} names version ${JSON.stringify(json.version)}, the file's version bytes ${version}`);
  for (const field of ["tenant", "prefix", "createdAt"] as const) {
    if (typeof json[field] !== "string" || json[field] === "") throw new BackupDefect(`corrupt: ${where} has no ${field}`);
  }
  if (!isCount(json.revision) || json.revision === 0) throw new BackupDefect(`corrupt: ${where} has no revision`);
  return { format: FORMAT, version, tenant: json.tenant as string, prefix: json.prefix as string, revision: json.revision, createdAt: json.createdAt as string };
}

function parseTrailer(body: Buffer, where: string): BackupTrailer {
  const json = parseJson(body, where);
  for (const field of ["keys", "leases", "bytes"] as const) {
    if (!isCount(json[field])) throw new BackupDefect(`corrupt: ${where} has no ${field} count`);
  }
  if (typeof json.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(json.sha256)) throw new BackupDefect(`corrupt: ${where} has no sha256`);
  return { keys: json.keys as number, leases: json.leases as number, bytes: json.bytes as number, sha256: json.sha256 };
}
