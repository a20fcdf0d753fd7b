// The gateway's log: one JSON line per event on stdout, in pino's shape (which the gateway used
// before): `{"level":30,"time":<ms>,"tenant":"...",<fields>,"msg":"..."}`, levels numbered as
// pino's. Each line is written as it is logged (the gateway logs little), synchronously; a write
// that fails (the log reader is gone: EPIPE) is dropped, so that logging never holds the process
// up. pino cost every idle gateway 1 MiB of memory (README: Sizing) for the same lines.
import { writeSync } from "node:fs";

export const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
export type Level = keyof typeof LEVELS;

type Log = (fields: Record<string, unknown> | string, msg?: string) => void;

export interface Logger {
  trace: Log;
  debug: Log;
  info: Log;
  warn: Log;
  error: Log;
  fatal: Log;
}

// A full pipe (EAGAIN, when stdout is non-blocking) is retried this often, a millisecond apart.
const FULL_PIPE_RETRIES = 100;
const pause = new Int32Array(new SharedArrayBuffer(4));

function writeLine(fd: number, line: string): void {
  const bytes = Buffer.from(line);
  let written = 0;
  for (let retries = 0; written < bytes.length; ) {
    try {
      written += writeSync(fd, bytes, written);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN" || ++retries > FULL_PIPE_RETRIES) return;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

/** Errors as pino's serializer writes them; anything else as it is. */
function replacer(_key: string, value: unknown): unknown {
  return value instanceof Error ? { type: value.name, message: value.message, stack: value.stack } : value;
}

/** A logger at `level` whose lines carry `base` (the tenant), written to `fd` (stdout unless given). */
export function createLogger(level: Level, base: Record<string, unknown> = {}, fd = 1): Logger {
  const threshold = LEVELS[level];
  const at = (value: number): Log => {
    if (value < threshold) return () => {};
    return (fields, msg) => {
      const entry = typeof fields === "string" ? { level: value, time: Date.now(), ...base, msg: fields } : { level: value, time: Date.now(), ...base, ...fields, msg };
      writeLine(fd, `${JSON.stringify(entry, replacer)}\n`);
    };
  };
  return { trace: at(LEVELS.trace), debug: at(LEVELS.debug), info: at(LEVELS.info), warn: at(LEVELS.warn), error: at(LEVELS.error), fatal: at(LEVELS.fatal) };
}
