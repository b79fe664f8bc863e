// safetensors headers: read and validated here (JSON is native to JS) before any tensor data is
// touched; the data itself is read natively (src/io/safetensors.cc).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { codedError } from '../errors.js';
import type { SafetensorsDtype, TensorSource } from '../native-types.js';

export type { SafetensorsDtype, TensorSource };

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
/** Larger headers are refused: real ones are kilobytes; this guards against a corrupt length. */
const MAX_HEADER_BYTES = 100 << 20;


const bad = (file: string, msg: string) => codedError('RangeError', 'ERR_TDPO_CHECKPOINT', `${file}: ${msg}`);

/** Parses and validates a safetensors header: offsets inside the file, sizes matching shapes. */
export function readSafetensorsHeader(file: string): TensorSource[] {
  let fd: number;
  try {
    fd = openSync(file, 'r');
    if (!fstatSync(fd).isFile()) {
      closeSync(fd);
      throw Object.assign(new Error('a directory or device, not a file'), { code: 'EISDIR' });
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'the file is missing' : e.message;
    throw codedError('Error', 'ERR_TDPO_CHECKPOINT', `cannot read safetensors file ${file}: ${why}`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size < 8) throw bad(file, `only ${size} bytes: not a safetensors file (truncated?)`);
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const headerBytes = Number(len.readBigUInt64LE(0));
    if (headerBytes > MAX_HEADER_BYTES || 8 + headerBytes > size) {
      throw bad(file, `header length ${headerBytes} does not fit in the file's ${size} bytes (corrupt or truncated)`);
    }
    const buf = Buffer.alloc(headerBytes);
    readSync(fd, buf, 0, headerBytes, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw bad(file, `header is not valid JSON (${(err as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad(file, 'header is not a JSON object');
    const dataStart = 8 + headerBytes;
    const dataBytes = size - dataStart;
    const out: TensorSource[] = [];
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e !== 'object' || e === null) throw bad(file, `tensor '${name}': entry is not an object`);
      if (typeof e.dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, e.dtype)) {
        throw bad(file, `tensor '${name}': dtype ${JSON.stringify(e.dtype)} is not supported (F32, F16, BF16)`);
      }
      const shape = e.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw bad(file, `tensor '${name}': shape must be an array of non-negative integers`);
      }
      const offsets = e.data_offsets;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw bad(file, `tensor '${name}': data_offsets must be two non-negative integers`);
      }
      const [begin, end] = offsets as [number, number];
      if (begin > end || end > dataBytes) {
        throw bad(file, `tensor '${name}': data [${begin}, ${end}) lies outside the ${dataBytes} data bytes (truncated?)`);
      }
      const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype];
      if (end - begin !== expected) {
        throw bad(file, `tensor '${name}': ${end - begin} bytes, but ${e.dtype} ${JSON.stringify(shape)} needs ${expected}`);
      }
      out.push({ name, file, dtype: e.dtype as SafetensorsDtype, shape: shape as number[], offset: dataStart + begin, bytes: end - begin });
    }
    return out;
  } finally {
    closeSync(fd);
  }
}
