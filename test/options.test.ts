// Options are defined once (lib/options.ts); the wrappers resolve them and refuse unknown keys, and
// the binding takes complete objects only (it has no defaults of its own).
import { describe, expect, it } from 'vitest';
import { Model, tdpoLossSync, TrainStep } from '../lib/index.js';
import { native } from '../lib/native.js';
import { defaults } from '../lib/options.js';
import { randomInputs } from './helpers.js';

const inputs = randomInputs({ B: 2, T: 3, V: 11, seed: 3 });
const cfg = { model_type: 'gpt2', vocab_size: 16, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2 };

describe('one row per option', () => {
  it('the loss without options is the loss with lib/options.ts defaults spelled out', () => {
    expect(tdpoLossSync(inputs)).toEqual(tdpoLossSync(inputs, { ...defaults.loss }));
    expect(defaults.loss).toMatchObject({ variant: 'tdpo2', beta: 0.1, alpha: 0.5 });
  });

  it('a misspelt option is refused with a suggestion, not ignored', async () => {
    expect(() => tdpoLossSync(inputs, { bet: 0.2 } as never)).toThrow(expect.objectContaining({ code: 'ERR_TDPO_OPTION', message: "options.bet is not an option (did you mean 'beta'?)" }));
    const m = await Model.create(cfg, { seed: 1 });
    await expect(m.generate([Int32Array.from([1])], { temprature: 0 } as never)).rejects.toMatchObject({ message: expect.stringContaining("did you mean 'temperature'") });
    await expect(TrainStep.create(m, { optimiser: 'sgd' } as never)).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    await expect(Model.create(cfg, { dtyp: 'bfloat16' } as never)).rejects.toMatchObject({ code: 'ERR_TDPO_OPTION' });
    m.dispose();
  });

  it('the binding has no defaults: a missing field is an error naming it', () => {
    expect(() => native.tdpoLossSync(inputs, { variant: 'tdpo2', beta: 0.1, alpha: 0.5, grad: false } as never)).toThrow(
      expect.objectContaining({ code: 'ERR_TDPO_OPTION', message: 'options.implementation is missing (a string)' }),
    );
  });

  it('the config and the loss API share src/loss checks and messages', () => {
    expect(() => native.checkLossOptions({ variant: 'tdpo2', beta: 0, alpha: 0.5 }, 'loss.')).toThrow(/^loss\.beta must be a finite number > 0/);
    expect(() => tdpoLossSync(inputs, { beta: 0 })).toThrow(/^options\.beta must be a finite number > 0/);
    expect(() => tdpoLossSync(inputs, { variant: 'sft' as never })).toThrow("options.variant must be one of 'tdpo2', 'tdpo1', 'dpo', got 'sft'");
  });
});
