// A budget on the values one chat-template render creates. @huggingface/jinja runs a template on
// the event loop with no limit of its own, and a template is data from a model folder, so a hostile
// or mistaken one must not take the process down. Doubling a string with replace() 28 times aborted
// Node (V8 "invalid size": RegExpExecMultiple grew a FixedArray past its 134M-element limit), and
// keeping 40 upper-cased copies of such a string ran the heap out (abort, 4.2 GB). Neither is a
// JavaScript exception a caller can catch, and a worker thread would not contain a V8 fatal error
// either; so the values are counted as they are made, and the render stops before any grows large.
//
// How: every value the engine makes goes through one constructor, RuntimeValue's, which assigns
// `this.value`. An accessor on RuntimeValue.prototype sees that assignment and charges the meter
// of the render in progress (none outside tdpo's renders: other users of the engine in the process
// see no change but the accessor's cost). The value lives under a symbol; an own data property
// made by the setter instead cost 4x the render time. The engine's version is pinned, since this
// reaches into its internals; install() refuses a layout it does not recognise.
import { Environment } from '@huggingface/jinja';

/**
 * Units one render may use: a unit per value made or variable bound, plus a string's length or an
 * array's or a mapping's size. Meta-Llama-3's template over 20 turns of 500 characters used 57,000,
 * about 6 per character of the conversation (measured on 0.5.13); this bounds a hostile template
 * to a few seconds and a few hundred MB. A render may also use INPUT_COPIES units per character
 * of its conversation, so that a long document still renders.
 */
export const VALUE_BUDGET = 20_000_000;
export const INPUT_COPIES = 16;

/**
 * Wall-clock time one render may take. Units count what is made, not what is scanned: `x in l`
 * inside range() loops makes one value per test but reads all of l (300,000 tests of a
 * 300,000-item list ran past 60 s), and the render holds the event loop, so Ctrl-C waits for it.
 * Every operation makes at least its result, so the meter looks at the clock every CLOCK_EVERY
 * charges. Real renders take well under a millisecond.
 */
export const TIME_LIMIT_MS = 2000;
const CLOCK_EVERY = 1024;

/** The meter of the render in progress: units left, or null outside tdpo's renders. */
let left: number | null = null;
let deadline = 0;
let charges = 0;
let installed = false;
const VALUE = Symbol('value');

function sizeOf(v: unknown): number {
  if (typeof v === 'string' || Array.isArray(v)) return v.length;
  if (v instanceof Map) return v.size;
  return 0;
}

function charge(units: number): void {
  if (left === null) return;
  left -= units;
  if (left < 0) throw new RangeError('the template made more values than a render may (a unit per value or variable binding, plus each character or item)');
  if (++charges % CLOCK_EVERY === 0 && performance.now() > deadline) {
    left = -1; // and so every value after this one, as above
    throw new RangeError(`the template ran past ${TIME_LIMIT_MS} ms`);
  }
}

function install(): void {
  // The engine exports no value classes; its Environment makes one, whose prototype chain leads
  // to RuntimeValue.prototype.
  const probe: unknown = new Environment().set('probe', '');
  const stringProto = probe && Object.getPrototypeOf(probe);
  const base = stringProto && Object.getPrototypeOf(stringProto);
  if (!base || base === Object.prototype || Object.getOwnPropertyDescriptor(base, 'value') || !Object.hasOwn(probe as object, 'value') || !['setVariable', 'declareVariable'].every((m) => typeof (Environment.prototype as unknown as Record<string, unknown>)[m] === 'function')) {
    throw new Error('this @huggingface/jinja is not the version whose values tdpo can meter');
  }
  Object.defineProperty(base, 'value', {
    configurable: true,
    get(this: Record<symbol, unknown>) {
      return this[VALUE];
    },
    set(this: Record<symbol, unknown>, v: unknown) {
      charge(1 + sizeOf(v));
      this[VALUE] = v;
    },
  });
  // A loop's iterations make no value through that constructor (LoopValue has an accessor of its
  // own), but each binds its variables in a scope, as each macro call binds its arguments.
  const scope = Environment.prototype as unknown as Record<'setVariable' | 'declareVariable', (this: unknown, name: string, value: unknown) => unknown>;
  for (const name of ['setVariable', 'declareVariable'] as const) {
    const bind = scope[name];
    scope[name] = function (this: unknown, n: string, value: unknown) {
      charge(1);
      return bind.call(this, n, value);
    };
  }
  installed = true;
}

/**
 * Runs one render under a fresh meter of VALUE_BUDGET + INPUT_COPIES × inputChars units and
 * TIME_LIMIT_MS. Beyond either, the value being made throws RangeError, and so does every value after it: the engine
 * swallows some errors (a failed variable lookup yields undefined), but it cannot go on without
 * making values.
 */
export function metered<T>(inputChars: number, render: () => T): T {
  if (!installed) install();
  const outer = { left, deadline };
  left = VALUE_BUDGET + INPUT_COPIES * inputChars;
  deadline = performance.now() + TIME_LIMIT_MS;
  try {
    return render();
  } finally {
    ({ left, deadline } = outer);
  }
}
