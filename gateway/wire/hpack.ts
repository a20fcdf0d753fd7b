// HPACK (RFC 7541) for the gateway's HTTP/2 sessions (h2.ts). Header blocks are encoded without
// the dynamic table, so that encoding keeps no state; the peer's are decoded in full (Go's encoder
// indexes and Huffman-codes), one decoder per connection, every block in the order it arrived.

export class HpackError extends Error {}

/** Fields a client sends as it sends them: names in lower case, no dynamic table, no Huffman. */
export function encodeHeaders(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const indexed = STATIC_INDEX.fields.get(`${name}: ${value}`);
    if (indexed !== undefined) {
      parts.push(integer(indexed, 7, 0x80));
      continue;
    }
    // Literal without indexing, the name from the static table where it has one (0: a new name).
    const named = STATIC_INDEX.names.get(name) ?? 0;
    parts.push(integer(named, 4, 0));
    if (named === 0) parts.push(literal(name));
    parts.push(literal(value));
  }
  return Buffer.concat(parts);
}

function literal(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  return Buffer.concat([integer(bytes.length, 7, 0), bytes]);
}

function integer(value: number, prefixBits: number, pattern: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([pattern | value]);
  const bytes = [pattern | max];
  for (value -= max; value >= 128; value = Math.floor(value / 128)) bytes.push((value % 128) | 128);
  bytes.push(value);
  return Buffer.from(bytes);
}

/** The receiving side of one connection: its dynamic table lives as long as the connection. */
export class HeaderDecoder {
  /** Newest first. */
  private readonly table: [string, string][] = [];
  private tableBytes = 0;
  private maxTableBytes: number;
  private readonly limitTableBytes: number;
  private block: Buffer = Buffer.alloc(0);
  private at = 0;

  /** `limitTableBytes`: SETTINGS_HEADER_TABLE_SIZE as this side announced it (4096 by default). */
  constructor(limitTableBytes = 4096) {
    this.limitTableBytes = limitTableBytes;
    this.maxTableBytes = limitTableBytes;
  }

  /**
   * The fields of one block. `maxListBytes` bounds the decoded list as RFC 9113 counts it (name,
   * value and 32 per field), checked field by field: a small block that names a large table entry
   * many times (an HPACK bomb) fails before it is built.
   */
  decode(block: Buffer, maxListBytes: number): Record<string, string> {
    this.block = block;
    this.at = 0;
    const fields: Record<string, string> = {};
    let listBytes = 0;
    while (this.at < block.length) {
      const first = block[this.at]!;
      let field: readonly [string, string];
      if (first & 0x80) {
        field = this.entry(this.integer(7));
      } else if (first & 0x40) {
        field = this.literalField(6);
        this.insert(field[0], field[1]);
      } else if (first & 0x20) {
        const size = this.integer(5);
        if (size > this.limitTableBytes) throw new HpackError(`dynamic table size ${size} exceeds the announced ${this.limitTableBytes}`);
        this.maxTableBytes = size;
        this.evict(0);
        continue;
      } else {
        // Without indexing (0000) or never indexed (0001): the same to a decoder.
        field = this.literalField(4);
      }
      const [name, value] = field;
      listBytes += name.length + value.length + 32;
      if (listBytes > maxListBytes) throw new HpackError(`a header list of more than ${maxListBytes} bytes`);
      fields[name] = value;
    }
    return fields;
  }

  private literalField(prefixBits: number): [string, string] {
    const index = this.integer(prefixBits);
    const name = index === 0 ? this.string() : this.entry(index)[0];
    return [name, this.string()];
  }

  private entry(index: number): readonly [string, string] {
    const field = index <= STATIC_TABLE.length ? STATIC_TABLE[index - 1] : this.table[index - STATIC_TABLE.length - 1];
    if (index === 0 || !field) throw new HpackError(`index ${index} is in neither table`);
    return field;
  }

  private insert(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.evict(size);
    // An entry larger than the table empties it and is not kept (RFC 7541 4.4).
    if (size > this.maxTableBytes) return;
    this.table.unshift([name, value]);
    this.tableBytes += size;
  }

  private evict(incoming: number): void {
    while (this.table.length > 0 && this.tableBytes + incoming > this.maxTableBytes) {
      const [name, value] = this.table.pop()!;
      this.tableBytes -= name.length + value.length + 32;
    }
  }

  private integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.byte() & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (shift > 28) throw new HpackError("integer too large");
      const next = this.byte();
      value += (next & 0x7f) * 2 ** shift;
      if (!(next & 0x80)) return value;
    }
  }

  private string(): string {
    const huffman = (this.block[this.at]! & 0x80) !== 0;
    const length = this.integer(7);
    if (this.at + length > this.block.length) throw new HpackError("string runs past the header block");
    const bytes = this.block.subarray(this.at, (this.at += length));
    return huffman ? huffmanDecode(bytes) : bytes.toString("latin1");
  }

  private byte(): number {
    if (this.at >= this.block.length) throw new HpackError("header block ends inside a field");
    return this.block[this.at++]!;
  }
}

/** Decodes a Huffman-coded string, walking a binary tree of the codes bit by bit. */
export function huffmanDecode(bytes: Buffer): string {
  let text = "";
  let node = 0;
  let depth = 0;
  let ones = true;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >> bit) & 1;
      ones &&= one === 1;
      const next = HUFFMAN_TREE[node * 2 + one]!;
      depth++;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === 256) throw new HpackError("Huffman string holds the end-of-string code");
        text += String.fromCharCode(symbol);
        node = 0;
        depth = 0;
        ones = true;
      } else {
        node = next;
      }
    }
  }
  // What is left must be a prefix of the end-of-string code (all ones), shorter than a byte.
  if (depth > 7 || !ones) throw new HpackError("Huffman string ends with bad padding");
  return text;
}

// RFC 7541 Appendix A.
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"],
  [":path", "/index.html"], [":scheme", "http"], [":scheme", "https"], [":status", "200"],
  [":status", "204"], [":status", "206"], [":status", "304"], [":status", "400"],
  [":status", "404"], [":status", "500"], ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""],
  ["accept", ""], ["access-control-allow-origin", ""], ["age", ""], ["allow", ""],
  ["authorization", ""], ["cache-control", ""], ["content-disposition", ""],
  ["content-encoding", ""], ["content-language", ""], ["content-length", ""],
  ["content-location", ""], ["content-range", ""], ["content-type", ""], ["cookie", ""],
  ["date", ""], ["etag", ""], ["expect", ""], ["expires", ""], ["from", ""], ["host", ""],
  ["if-match", ""], ["if-modified-since", ""], ["if-none-match", ""], ["if-range", ""],
  ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""], ["location", ""],
  ["max-forwards", ""], ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""],
  ["referer", ""], ["refresh", ""], ["retry-after", ""], ["server", ""], ["set-cookie", ""],
  ["strict-transport-security", ""], ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""],
  ["via", ""], ["www-authenticate", ""],
];
// RFC 7541 Appendix B: each byte's code (its low HUFFMAN_LENGTHS[byte] bits) and length.
const HUFFMAN_CODES = [
  0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8, 0xffffea,
  0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0,
  0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9,
  0xffffffa, 0xffffffb, 0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa,
  0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18, 0x0, 0x1,
  0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb,
  0x7ffc, 0x20, 0xffb, 0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60,
  0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
  0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73,
  0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4,
  0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75, 0x28, 0x29,
  0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
  0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2,
  0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc,
  0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1,
  0x7fffe2, 0x7fffe3, 0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef,
  0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
  0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2,
  0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5,
  0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec,
  0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3,
  0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9,
  0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7,
  0x1fffe8, 0x7ffff3, 0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4,
  0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb, 0xffffffe,
  0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/** HUFFMAN_TREE[2n + bit]: the child of node n, or -(symbol + 1) for a leaf. */
const HUFFMAN_TREE = (() => {
  const tree = new Int32Array(2 * 512);
  let nodes = 1;
  const add = (symbol: number, code: number, length: number) => {
    let node = 0;
    for (let bit = length - 1; bit > 0; bit--) {
      const slot = node * 2 + ((code / 2 ** bit) & 1);
      if (tree[slot] === 0) tree[slot] = nodes++;
      node = tree[slot]!;
    }
    tree[node * 2 + (code & 1)] = -(symbol + 1);
  };
  for (let symbol = 0; symbol < 256; symbol++) add(symbol, HUFFMAN_CODES[symbol]!, HUFFMAN_LENGTHS[symbol]!);
  add(256, 0x3fffffff, 30);
  return tree;
})();

/** The static table's indices by field and by name (the first entry of each name), for encoding. */
const STATIC_INDEX = (() => {
  const fields = new Map<string, number>();
  const names = new Map<string, number>();
  STATIC_TABLE.forEach(([name, value], at) => {
    fields.set(`${name}: ${value}`, at + 1);
    if (!names.has(name)) names.set(name, at + 1);
  });
  return { fields, names };
})();
