// Every kind of bad input throws a coded TypeError / RangeError naming the field, from the sync
// call and as a rejection from the async one, for both implementations; nothing aborts.
import { describe, expect, it } from 'vitest';
import { tdpoLoss, tdpoLossSync, type TdpoLossInputs } from '../lib/index.js';
import { randomInputs } from './helpers.js';

type Mutation = (inp: Record<string, unknown>, opt: Record<string, unknown>) => unknown;
interface BadCase {
  name: string;
  mutate: Mutation;
  type: 'TypeError' | 'RangeError';
  code: string;
  field: string | RegExp;
}

const good = () => randomInputs({ B: 4, T: 3, V: 11, prompt: 1, seed: 7 });
const V = 11;

const cases: BadCase[] = [
  { name: 'inputs not an object', mutate: () => 42, type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs' },
  { name: 'policyLogits missing', mutate: (i) => void delete i.policyLogits, type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs.policyLogits' },
  { name: 'policyLogits as Float64Array', mutate: (i) => void (i.policyLogits = new Float64Array(132)), type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs.policyLogits' },
  { name: 'policyLogits as a plain array', mutate: (i) => void (i.policyLogits = Array.from(i.policyLogits as Float32Array)), type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs.policyLogits' },
  { name: 'referenceLogits as Int32Array', mutate: (i) => void (i.referenceLogits = new Int32Array(132)), type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs.referenceLogits' },
  { name: 'labels as Float32Array', mutate: (i) => void (i.labels = new Float32Array(12)), type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'inputs.labels' },
  { name: 'shape missing', mutate: (i) => void delete i.shape, type: 'TypeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.shape' },
  { name: 'shape of rank 2', mutate: (i) => void (i.shape = [4, 33]), type: 'TypeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.shape' },
  { name: 'shape with a zero', mutate: (i) => void (i.shape = [4, 0, 11]), type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.shape[1]' },
  { name: 'shape with a fraction', mutate: (i) => void (i.shape = [4, 3, 11.5]), type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.shape[2]' },
  { name: 'policyLogits too short', mutate: (i) => void (i.policyLogits = new Float32Array(131)), type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.policyLogits' },
  { name: 'referenceLogits too long', mutate: (i) => void (i.referenceLogits = new Float32Array(133)), type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.referenceLogits' },
  { name: 'labels of the wrong length', mutate: (i) => void (i.labels = new Int32Array(13)), type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'inputs.labels' },
  {
    name: 'odd B',
    mutate: (i) => {
      i.shape = [3, 4, 11];
      i.labels = new Int32Array(12).fill(1);
    },
    type: 'RangeError', code: 'ERR_TDPO_SHAPE', field: 'shape[0] (B) must be even',
  },
  { name: 'label = V', mutate: (i) => void ((i.labels as Int32Array)[5] = V), type: 'RangeError', code: 'ERR_TDPO_LABEL', field: 'labels[5]' },
  { name: 'label = -1', mutate: (i) => void ((i.labels as Int32Array)[4] = -1), type: 'RangeError', code: 'ERR_TDPO_LABEL', field: 'labels[4]' },
  { name: 'label = -101', mutate: (i) => void ((i.labels as Int32Array)[2] = -101), type: 'RangeError', code: 'ERR_TDPO_LABEL', field: 'labels[2]' },
  { name: 'NaN policy logit at a scored position', mutate: (i) => void ((i.policyLogits as Float32Array)[2 * V + 3] = NaN), type: 'RangeError', code: 'ERR_TDPO_LOGITS', field: 'policyLogits[0, 2, 3] is NaN' },
  { name: 'NaN policy logit at an unscored position', mutate: (i) => void ((i.policyLogits as Float32Array)[5] = NaN), type: 'RangeError', code: 'ERR_TDPO_LOGITS', field: 'policyLogits[0, 0, 5] is NaN' },
  { name: '+Infinity reference logit', mutate: (i) => void ((i.referenceLogits as Float32Array)[4 * V + 7] = Infinity), type: 'RangeError', code: 'ERR_TDPO_LOGITS', field: 'referenceLogits[1, 1, 7] is +Infinity' },
  { name: 'a scored row of -Infinity only', mutate: (i) => void (i.policyLogits as Float32Array).fill(-Infinity, 2 * V, 3 * V), type: 'RangeError', code: 'ERR_TDPO_LOGITS', field: 'policyLogits[0, 2, :]' },
  { name: 'options not an object', mutate: (_i, o) => void (o.__replace = 'fast'), type: 'TypeError', code: 'ERR_TDPO_TYPE', field: 'options' },
  { name: 'unknown variant', mutate: (_i, o) => void (o.variant = 'ipo'), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.variant' },
  { name: 'unknown implementation', mutate: (_i, o) => void (o.implementation = 'gpu'), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.implementation' },
  { name: 'variant not a string', mutate: (_i, o) => void (o.variant = 2), type: 'TypeError', code: 'ERR_TDPO_OPTION', field: 'options.variant' },
  { name: 'beta = 0', mutate: (_i, o) => void (o.beta = 0), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.beta' },
  { name: 'beta < 0', mutate: (_i, o) => void (o.beta = -0.1), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.beta' },
  { name: 'beta = NaN', mutate: (_i, o) => void (o.beta = NaN), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.beta' },
  { name: 'beta = Infinity', mutate: (_i, o) => void (o.beta = Infinity), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.beta' },
  { name: 'beta as a string', mutate: (_i, o) => void (o.beta = '0.1'), type: 'TypeError', code: 'ERR_TDPO_OPTION', field: 'options.beta' },
  { name: 'alpha = NaN', mutate: (_i, o) => void (o.alpha = NaN), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.alpha' },
  { name: 'alpha = -Infinity', mutate: (_i, o) => void (o.alpha = -Infinity), type: 'RangeError', code: 'ERR_TDPO_OPTION', field: 'options.alpha' },
  { name: 'grad not a boolean', mutate: (_i, o) => void (o.grad = 'yes'), type: 'TypeError', code: 'ERR_TDPO_OPTION', field: 'options.grad' },
];

function build(c: BadCase, implementation: 'fused' | 'reference') {
  const inputs = good() as unknown as Record<string, unknown>;
  const options: Record<string, unknown> = { implementation };
  const replaced = c.mutate(inputs, options);
  const finalInputs = replaced === undefined ? inputs : replaced;
  const finalOptions = options.__replace !== undefined ? options.__replace : options;
  return [finalInputs as unknown as TdpoLossInputs, finalOptions as never] as const;
}

function check(err: unknown, c: BadCase) {
  expect(err).toBeInstanceOf(c.type === 'TypeError' ? TypeError : RangeError);
  expect((err as { code?: string }).code).toBe(c.code);
  expect((err as Error).message).toContain(typeof c.field === 'string' ? c.field : '');
}

describe('bad input', () => {
  for (const implementation of ['fused', 'reference'] as const) {
    for (const c of cases) {
      it(`${implementation}: ${c.name}`, async () => {
        const [inputs, options] = build(c, implementation);
        let thrown: unknown;
        try {
          tdpoLossSync(inputs, options);
        } catch (err) {
          thrown = err;
        }
        check(thrown, c);
        const rejected = await tdpoLoss(inputs, options).then(
          () => undefined,
          (err: unknown) => err,
        );
        check(rejected, c);
      });
    }
  }

  it('still works after every error above', () => {
    const out = tdpoLossSync(good(), { grad: true });
    expect(Number.isFinite(out.loss)).toBe(true);
  });
});
